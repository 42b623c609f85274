// The API-server double's storage: every object as JSON, one global resourceVersion counter
// (as etcd's revision: each write takes the next number; a list carries the current one), a
// bounded history of watch events, and the semantics the real API server gives writes:
//   create: uid, creationTimestamp, generation 1, generateName, 409 AlreadyExists, 404 when the
//           namespace does not exist; the status of types with a status subresource is reset.
//   update: 409 Conflict when metadata.resourceVersion is given and stale; a no-op write keeps
//           the resourceVersion and sends no event; metadata.generation + 1 when anything but
//           metadata and status changed; the main endpoint keeps the old status of types with a
//           status subresource, the /status endpoint changes only status.
//   delete: propagationPolicy Orphan / Background / Foreground through ownerReferences
//           (recursively; batch/v1 Jobs default to Orphan, everything else to Background, as the
//           real server); finalizers delay the removal until they are cleared.
//   watch:  events after a resourceVersion replayed from the history; older than the history:
//           ApiError 410 Expired; objects entering or leaving a label selector arrive as ADDED /
//           DELETED. Compact() forgets the history, DropWatches() ends every open watch.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tests/util/kube/resource_types.h"
#include "tests/util/kube/selectors.h"

namespace cohort::kube {

using Json = nlohmann::json;

struct WatchEvent {
  std::string type;  // ADDED, MODIFIED, DELETED
  Json object;
};

// One open watch: the events that match its type, namespace and selectors, in order.
class Watch {
 public:
  // The next event, waiting up to `wait`; nullopt when none came or the watch was closed.
  std::optional<WatchEvent> Next(std::chrono::milliseconds wait);
  bool closed() const;
  void Close();

 private:
  friend class ObjectStore;
  std::string type_key_, ns_;
  LabelSelector labels_;
  std::optional<FieldSelector> fields_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WatchEvent> queue_;
  bool closed_ = false;
  bool Selects(const Json& object) const;
  void Push(WatchEvent e);
  // Queues the event this watch sees for a write: as is, or ADDED / DELETED when the object
  // entered or left its selectors.
  void Offer(const std::string& type, const Json& object, const Json* old);
};

struct DeleteOptions {
  std::string propagation;  // "", Orphan, Background, Foreground
  std::string precondition_uid, precondition_rv;
};

class ObjectStore {
 public:
  explicit ObjectStore(ResourceRegistry& registry, size_t history = 1000);

  Json Get(const ResourceType& t, const std::string& ns, const std::string& name) const;
  // A <Kind>List with the current resourceVersion; ns "" lists every namespace.
  Json List(const ResourceType& t, const std::string& ns, const LabelSelector& labels,
            const std::optional<FieldSelector>& fields) const;
  // field_validation: the request's fieldValidation ("Strict": unknown fields of a custom
  // resource answer 400; otherwise they are pruned).
  Json Create(const ResourceType& t, const std::string& ns, Json object,
              const std::string& field_validation = "");
  Json Update(const ResourceType& t, const std::string& ns, const std::string& name, Json object,
              bool status_subresource, const std::string& field_validation = "");
  Json Patch(const ResourceType& t, const std::string& ns, const std::string& name,
             const std::string& body, const std::string& content_type, bool status_subresource,
             const std::string& field_validation = "");
  // The deleted object, or the object marked for deletion when finalizers keep it.
  Json Delete(const ResourceType& t, const std::string& ns, const std::string& name,
              const DeleteOptions& options);
  // Opens a watch. resource_version "" or "0": ADDED for every matching object first, then live
  // events; "N": the events after N. Throws ApiError 410 (Expired) when N is older than the
  // history.
  std::shared_ptr<Watch> OpenWatch(const ResourceType& t, const std::string& ns,
                                   const LabelSelector& labels,
                                   const std::optional<FieldSelector>& fields,
                                   const std::string& resource_version);

  int64_t ResourceVersion() const;
  // Blocks until the resourceVersion passes `seen` or `wait` passes; returns the current one.
  int64_t WaitForChange(int64_t seen, std::chrono::milliseconds wait) const;
  void Compact();      // forget the event history: watches from any older version get 410
  void DropWatches();  // end every open watch (clients see their stream close)
  void SetHistoryLimit(size_t events);

 private:
  struct Stored {
    std::string type_key;  // "<group>/<plural>"
    Json object;
  };
  ResourceRegistry& registry_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::map<std::string, Stored> objects_;  // key: type_key/ns/name
  int64_t rv_ = 0;
  int64_t compacted_rv_ = 0;  // watches from below this answer 410
  size_t history_limit_;
  struct Change {  // one write, as the history keeps it for watches that resume
    int64_t rv;
    std::string type_key, type;
    Json object, old;  // old: the object before a MODIFIED (null otherwise)
  };
  std::deque<Change> history_;
  std::list<std::weak_ptr<Watch>> watches_;

  static std::string TypeKey(const ResourceType& t) { return t.group + "/" + t.plural; }
  std::string Key(const ResourceType& t, const std::string& ns, const std::string& name) const;
  Json& Existing(const ResourceType& t, const std::string& ns, const std::string& name);
  std::string NextVersion();
  void Emit(const std::string& type_key, const std::string& type, const Json& object,
            const Json* old);
  Json UpdateLocked(const ResourceType& t, const std::string& ns, const std::string& name,
                    Json object, bool status_subresource, const std::string& field_validation);
  void Remove(const std::string& key, const std::string& policy);
  void DeleteDependents(const std::string& uid, const std::string& policy);
  // An object with finalizers is not removed: it gets deletionTimestamp (once, with an event)
  // and stays until the last finalizer goes (UpdateLocked). Returns whether it was held.
  bool HoldForFinalizers(const std::string& type_key, Json& stored);
  std::string DefaultPolicy(const ResourceType& t) const;
};

}  // namespace cohort::kube
