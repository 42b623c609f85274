#include "tests/util/kube/object_store.h"

#include <algorithm>
#include <vector>

#include "common/utc_time.h"
#include "tests/util/kube/api_error.h"
#include "tests/util/kube/object_rules.h"
#include "tests/util/kube/patch.h"

namespace cohort::kube {

bool Watch::Selects(const Json& object) const {
  if (!ns_.empty() && object["metadata"].value("namespace", "") != ns_) return false;
  return labels_.Matches(object) && (!fields_ || fields_->Matches(object));
}

void Watch::Push(WatchEvent e) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(e));
  cv_.notify_all();
}

std::optional<WatchEvent> Watch::Next(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, wait, [&] { return closed_ || !queue_.empty(); });
  if (closed_ || queue_.empty()) return std::nullopt;
  WatchEvent e = std::move(queue_.front());
  queue_.pop_front();
  return e;
}

bool Watch::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

void Watch::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

ObjectStore::ObjectStore(ResourceRegistry& registry, size_t history)
    : registry_(registry), history_limit_(history) {
  for (const char* ns : {"default", "kube-system", "kube-public"}) {
    Create(*registry_.Find("", "v1", "namespaces"), "", {{"metadata", {{"name", ns}}}});
  }
}

std::string ObjectStore::Key(const ResourceType& t, const std::string& ns,
                             const std::string& name) const {
  return TypeKey(t) + "/" + (t.namespaced ? ns : "") + "/" + name;
}

std::string ObjectStore::NextVersion() {
  changed_.notify_all();
  return std::to_string(++rv_);
}

Json& ObjectStore::Existing(const ResourceType& t, const std::string& ns, const std::string& name) {
  auto it = objects_.find(Key(t, ns, name));
  if (it == objects_.end()) throw NotFound(t.plural, t.group, name);
  return it->second.object;
}

void Watch::Offer(const std::string& type, const Json& object, const Json* old) {
  const bool now = Selects(object), before = old && Selects(*old);
  if (type == "MODIFIED" && now && !before) {
    Push({"ADDED", object});  // entered the selection
  } else if (type == "MODIFIED" && !now && before) {
    Push({"DELETED", object});  // left it
  } else if (now) {
    Push({type, object});
  }
}

void ObjectStore::Emit(const std::string& type_key, const std::string& type, const Json& object,
                       const Json* old) {
  history_.push_back({rv_, type_key, type, object, old ? *old : Json()});
  while (history_.size() > history_limit_) {
    compacted_rv_ = history_.front().rv;
    history_.pop_front();
  }
  for (auto it = watches_.begin(); it != watches_.end();) {
    auto w = it->lock();
    if (!w || w->closed()) {
      it = watches_.erase(it);
      continue;
    }
    ++it;
    if (w->type_key_ == type_key) w->Offer(type, object, old);
  }
}

Json ObjectStore::Get(const ResourceType& t, const std::string& ns, const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = objects_.find(Key(t, ns, name));
  if (it == objects_.end()) throw NotFound(t.plural, t.group, name);
  Json out = it->second.object;
  out["apiVersion"] = t.ApiVersion();
  return out;
}

Json ObjectStore::List(const ResourceType& t, const std::string& ns, const LabelSelector& labels,
                       const std::optional<FieldSelector>& fields) const {
  std::lock_guard<std::mutex> lock(mu_);
  Json items = Json::array();
  const std::string prefix = TypeKey(t) + "/";
  for (auto it = objects_.lower_bound(prefix); it != objects_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    const Json& o = it->second.object;
    if (!ns.empty() && o["metadata"].value("namespace", "") != ns) continue;
    if (!labels.Matches(o) || (fields && !fields->Matches(o))) continue;
    items.push_back(o);
    items.back()["apiVersion"] = t.ApiVersion();
  }
  return {{"kind", t.kind + "List"},
          {"apiVersion", t.ApiVersion()},
          {"metadata", {{"resourceVersion", std::to_string(rv_)}}},
          {"items", items}};
}

Json ObjectStore::Create(const ResourceType& t, const std::string& ns, Json object,
                         const std::string& field_validation) {
  CheckIdentity(t, ns, object);
  Json& meta = object["metadata"];
  std::lock_guard<std::mutex> lock(mu_);
  if (t.namespaced && !objects_.count("/namespaces//" + ns)) {
    throw NotFound("namespaces", "", ns);
  }
  if (meta.value("name", "").empty()) {
    static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
    std::string name;
    do {
      const std::string random = NewUid();
      name = meta["generateName"].get<std::string>();
      for (int i = 0; i < 5; ++i) name += kAlphabet[static_cast<unsigned char>(random[i]) % 27];
    } while (objects_.count(Key(t, ns, name)));
    meta["name"] = name;
  }
  const std::string name = meta["name"];
  const std::string key = Key(t, ns, name);
  if (objects_.count(key)) throw AlreadyExists(t.plural, t.group, name);
  meta["uid"] = NewUid();
  PrepareForCreate(t, object);
  if (t.IsCrd()) ApplySchema(t, object, field_validation);  // rebuilds object: meta is stale
  if (t.plural == "customresourcedefinitions") registry_.AddCrd(object);
  Json& m = object["metadata"];
  m["creationTimestamp"] = UtcNowRfc3339();
  m["resourceVersion"] = NextVersion();
  m.erase("deletionTimestamp");
  object["apiVersion"] = t.ApiVersion();
  objects_[key] = {TypeKey(t), object};
  Emit(TypeKey(t), "ADDED", object, nullptr);
  return object;
}

Json ObjectStore::Update(const ResourceType& t, const std::string& ns, const std::string& name,
                         Json object, bool status_subresource,
                         const std::string& field_validation) {
  CheckIdentity(t, ns, object);
  if (object["metadata"].value("name", "") != name) {
    throw BadRequest("the name of the object (" + object["metadata"].value("name", "") +
                     ") does not match the name on the URL (" + name + ")");
  }
  std::lock_guard<std::mutex> lock(mu_);
  return UpdateLocked(t, ns, name, std::move(object), status_subresource, field_validation);
}

Json ObjectStore::UpdateLocked(const ResourceType& t, const std::string& ns,
                               const std::string& name, Json object, bool status_subresource,
                               const std::string& field_validation) {
  Json& stored = Existing(t, ns, name);
  const std::string rv = object["metadata"].value("resourceVersion", "");
  if (!rv.empty() && rv != stored["metadata"].value("resourceVersion", "")) {
    throw Conflict(t.plural, t.group, name);
  }
  PrepareForUpdate(t, stored, object, status_subresource);
  if (t.IsCrd()) ApplySchema(t, object, field_validation);
  object["apiVersion"] = t.ApiVersion();
  object["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"];
  if (object == stored) return object;  // a no-op: same resourceVersion, no event
  if (t.plural == "customresourcedefinitions") registry_.AddCrd(object);
  const Json old = stored;
  object["metadata"]["resourceVersion"] = NextVersion();
  stored = object;
  Emit(TypeKey(t), "MODIFIED", object, &old);
  const Json& meta = object["metadata"];
  if (meta.contains("deletionTimestamp") && meta.value("finalizers", Json::array()).empty()) {
    Remove(Key(t, ns, name), "Background");  // the last finalizer is gone
  }
  return object;
}

Json ObjectStore::Patch(const ResourceType& t, const std::string& ns, const std::string& name,
                        const std::string& body, const std::string& content_type,
                        bool status_subresource, const std::string& field_validation) {
  std::lock_guard<std::mutex> lock(mu_);
  Json current = Existing(t, ns, name);
  current["apiVersion"] = t.ApiVersion();
  Json patched = ApplyPatch(current, body, content_type, !t.IsCrd());
  CheckIdentity(t, ns, patched);
  if (patched["metadata"].value("name", "") != name) {
    throw BadRequest("metadata.name: Invalid value: the patch changes the name");
  }
  return UpdateLocked(t, ns, name, std::move(patched), status_subresource, field_validation);
}

std::string ObjectStore::DefaultPolicy(const ResourceType& t) const {
  // batch/v1 Jobs orphan their pods unless asked otherwise, for backward compatibility.
  return t.group == "batch" && t.version == "v1" && t.plural == "jobs" ? "Orphan" : "Background";
}

Json ObjectStore::Delete(const ResourceType& t, const std::string& ns, const std::string& name,
                         const DeleteOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  Json& stored = Existing(t, ns, name);
  const Json& meta = stored["metadata"];
  if (!options.precondition_uid.empty() && options.precondition_uid != meta["uid"]) {
    throw ApiError(409, "Conflict",
                   "Precondition failed: UID in precondition: " + options.precondition_uid +
                       ", UID in object meta: " + meta["uid"].get<std::string>());
  }
  if (!options.precondition_rv.empty() && options.precondition_rv != meta["resourceVersion"]) {
    throw ApiError(
        409, "Conflict",
        "Precondition failed: ResourceVersion in precondition: " + options.precondition_rv +
            ", ResourceVersion in object meta: " + meta["resourceVersion"].get<std::string>());
  }
  const std::string policy = options.propagation.empty() ? DefaultPolicy(t) : options.propagation;
  if (policy != "Orphan" && policy != "Background" && policy != "Foreground") {
    throw BadRequest("DeleteOptions.propagationPolicy: Unsupported value: \"" + policy +
                     "\": supported values: \"Foreground\", \"Background\", \"Orphan\"");
  }
  if (HoldForFinalizers(TypeKey(t), stored)) return stored;
  Json gone = stored;
  Remove(Key(t, ns, name), policy);
  return gone;
}

void ObjectStore::Remove(const std::string& key, const std::string& policy) {
  auto it = objects_.find(key);
  if (it == objects_.end()) return;
  Stored s = it->second;
  const std::string uid = s.object["metadata"].value("uid", "");
  if (policy == "Foreground") {
    // The owner stays, marked, until its dependents are gone (their watchers see this first).
    const Json old = s.object;
    it->second.object["metadata"]["deletionTimestamp"] = UtcNowRfc3339();
    it->second.object["metadata"]["finalizers"] = Json::array({"foregroundDeletion"});
    it->second.object["metadata"]["resourceVersion"] = NextVersion();
    Emit(s.type_key, "MODIFIED", it->second.object, &old);
    DeleteDependents(uid, policy);
    it = objects_.find(key);
    if (it == objects_.end()) return;
    s = it->second;
  }
  objects_.erase(key);
  s.object["metadata"]["resourceVersion"] = NextVersion();
  Emit(s.type_key, "DELETED", s.object, nullptr);
  if (s.type_key == "apiextensions.k8s.io/customresourcedefinitions") {
    const Json& spec = s.object["spec"];
    const std::string prefix =
        spec["group"].get<std::string>() + "/" + spec["names"]["plural"].get<std::string>() + "/";
    std::vector<std::string> keys;
    for (const auto& [k, v] : objects_) {
      if (k.rfind(prefix, 0) == 0) keys.push_back(k);
    }
    for (const auto& k : keys) Remove(k, "Background");
    registry_.RemoveCrd(s.object["metadata"]["name"]);
  }
  if (s.type_key == "/namespaces") {
    const std::string name = s.object["metadata"]["name"];
    std::vector<std::string> keys;
    for (const auto& [k, v] : objects_) {
      if (v.object["metadata"].value("namespace", "") == name) keys.push_back(k);
    }
    for (const auto& k : keys) Remove(k, "Background");
  }
  if (policy != "Foreground") DeleteDependents(uid, policy);
}

bool ObjectStore::HoldForFinalizers(const std::string& type_key, Json& stored) {
  if (stored["metadata"].value("finalizers", Json::array()).empty()) return false;
  if (!stored["metadata"].contains("deletionTimestamp")) {
    const Json old = stored;
    stored["metadata"]["deletionTimestamp"] = UtcNowRfc3339();
    stored["metadata"]["deletionGracePeriodSeconds"] = 0;
    stored["metadata"]["resourceVersion"] = NextVersion();
    Emit(type_key, "MODIFIED", stored, &old);
  }
  return true;
}

void ObjectStore::DeleteDependents(const std::string& uid, const std::string& policy) {
  std::vector<std::string> dependents;
  for (const auto& [k, v] : objects_) {
    for (const auto& ref : v.object["metadata"].value("ownerReferences", Json::array())) {
      if (ref.value("uid", "") == uid) dependents.push_back(k);
    }
  }
  for (const auto& k : dependents) {
    auto it = objects_.find(k);
    if (it == objects_.end()) continue;
    if (policy != "Orphan") {
      // As the garbage collector deletes them: one with finalizers stays until they are done.
      if (!HoldForFinalizers(it->second.type_key, it->second.object)) Remove(k, policy);
      continue;
    }
    const Json old = it->second.object;
    Json& refs = it->second.object["metadata"]["ownerReferences"];
    Json kept = Json::array();
    for (const auto& ref : refs) {
      if (ref.value("uid", "") != uid) kept.push_back(ref);
    }
    if (kept.empty()) {
      it->second.object["metadata"].erase("ownerReferences");
    } else {
      refs = kept;
    }
    it->second.object["metadata"]["resourceVersion"] = NextVersion();
    Emit(it->second.type_key, "MODIFIED", it->second.object, &old);
  }
}

std::shared_ptr<Watch> ObjectStore::OpenWatch(const ResourceType& t, const std::string& ns,
                                              const LabelSelector& labels,
                                              const std::optional<FieldSelector>& fields,
                                              const std::string& resource_version) {
  auto w = std::make_shared<Watch>();
  w->type_key_ = TypeKey(t);
  w->ns_ = t.namespaced ? ns : "";
  w->labels_ = labels;
  w->fields_ = fields;
  std::lock_guard<std::mutex> lock(mu_);
  if (resource_version.empty() || resource_version == "0") {
    for (const auto& [k, v] : objects_) {
      if (v.type_key == w->type_key_ && w->Selects(v.object)) w->Push({"ADDED", v.object});
    }
  } else {
    int64_t from = 0;
    try {
      from = std::stoll(resource_version);
    } catch (const std::exception&) {
      throw BadRequest("invalid resource version: " + resource_version);
    }
    if (from < compacted_rv_) {
      throw ApiError(410, "Expired",
                     "too old resource version: " + resource_version + " (" +
                         std::to_string(compacted_rv_ + 1) + ")");
    }
    for (const auto& h : history_) {
      if (h.rv > from && h.type_key == w->type_key_) {
        w->Offer(h.type, h.object, h.old.is_null() ? nullptr : &h.old);
      }
    }
  }
  watches_.push_back(w);
  return w;
}

int64_t ObjectStore::ResourceVersion() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rv_;
}

int64_t ObjectStore::WaitForChange(int64_t seen, std::chrono::milliseconds wait) const {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, wait, [&] { return rv_ > seen; });
  return rv_;
}

void ObjectStore::Compact() {
  std::lock_guard<std::mutex> lock(mu_);
  history_.clear();
  compacted_rv_ = rv_;
}

void ObjectStore::DropWatches() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& weak : watches_) {
    if (auto w = weak.lock()) w->Close();
  }
  watches_.clear();
}

void ObjectStore::SetHistoryLimit(size_t events) {
  std::lock_guard<std::mutex> lock(mu_);
  history_limit_ = std::max<size_t>(events, 1);
}

}  // namespace cohort::kube
