// memory://name: objects in a process-wide map, one namespace per name, for tests. Two stores
// opened with the same name see the same objects; the objects live until the process exits or
// ClearMemoryStore(name). memory://name/a/b is the folder a/b/ of name's objects (as file:// and
// s3:// URIs with a path are), so a snapshot's URI (memory://name/run/step-N) loads.
#pragma once

#include <memory>
#include <string>

#include "checkpoint/store/object_store.h"

namespace cohort::checkpoint {

class MemoryObjectStore : public ObjectStore {
 public:
  // name: the part after memory:// (may be empty); from its first '/' on, a folder.
  explicit MemoryObjectStore(const std::string& name);
  ~MemoryObjectStore() override;

  std::string Uri() const override;
  std::unique_ptr<ObjectWriter> NewWriter(const std::string& key) override;
  std::optional<std::string> Get(const std::string& key) override;
  std::string GetRange(const std::string& key, uint64_t offset, uint64_t length) override;
  std::optional<ObjectInfo> Head(const std::string& key) override;
  std::vector<ObjectInfo> List(const std::string& prefix) override;
  void Delete(const std::string& key) override;

  struct Space;  // the shared objects of one name

 private:
  std::string name_;
  std::string prefix_;  // "a/b/" for memory://name/a/b, else empty
  std::shared_ptr<Space> space_;
};

// Drops every object of memory://name (of its folder, for name/a/b).
void ClearMemoryStore(const std::string& name);

}  // namespace cohort::checkpoint
