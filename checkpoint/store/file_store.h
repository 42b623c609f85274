// file:///abs/dir (or a plain path): one file per object under the root directory. A writer
// streams into a hidden temp file in the object's own directory, then Commit() fsyncs it, renames
// it over the final name and fsyncs the directory, so the final name only ever holds a complete
// object, also across a crash or SIGKILL. Directories are created as needed, and empty ones are
// removed when their last object is deleted.
#pragma once

#include <string>

#include "checkpoint/store/object_store.h"

namespace cohort::checkpoint {

class FileObjectStore : public ObjectStore {
 public:
  // root: an absolute or relative directory path; it need not exist yet.
  explicit FileObjectStore(const std::string& root);

  std::string Uri() const override;
  std::unique_ptr<ObjectWriter> NewWriter(const std::string& key) override;
  std::optional<std::string> Get(const std::string& key) override;
  std::string GetRange(const std::string& key, uint64_t offset, uint64_t length) override;
  std::optional<ObjectInfo> Head(const std::string& key) override;
  std::vector<ObjectInfo> List(const std::string& prefix) override;
  void Delete(const std::string& key) override;

  // Temp files start with this; List() never shows them and keys may not use it. They are
  // "<prefix><basename>.<host>.<pid>.<n>": the ones of a writer on this host that died (a
  // SIGKILLed save) are removed when the store is opened and at the next save into their folder.
  static constexpr const char* kTempPrefix = ".cohort-tmp.";

 private:
  std::string PathOf(const std::string& key) const;  // validates the key
  void ListDir(const std::string& rel_dir, const std::string& prefix,
               std::vector<ObjectInfo>* out) const;

  std::string root_;  // absolute, no trailing '/' (except "/")
};

}  // namespace cohort::checkpoint
