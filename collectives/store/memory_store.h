// A Store inside one process, over a KvTable. Tests run ranks as threads against one of these;
// several MemoryStores (or a GrpcStoreServer) may share one table.
#pragma once

#include <memory>

#include "collectives/store/kv_table.h"
#include "collectives/store/store.h"

namespace cohort::collectives {

class MemoryStore : public Store {
 public:
  // A store over a table of its own.
  MemoryStore();
  // A store over `table`, shared with whoever else holds it.
  explicit MemoryStore(std::shared_ptr<KvTable> table);

  void Set(const std::string& key, const std::string& value) override;
  std::string Get(const std::string& key, Millis timeout) override;
  int64_t Add(const std::string& key, int64_t delta) override;
  std::string CompareSet(const std::string& key, const std::string& expected,
                         const std::string& desired) override;
  bool Delete(const std::string& key) override;
  void Wait(const std::vector<std::string>& keys, Millis timeout) override;
  std::map<std::string, std::string> List(const std::string& prefix) override;

  // The table this store reads and writes.
  const std::shared_ptr<KvTable>& table() const { return table_; }

 private:
  // Blocks until the watch on keys fires; returns its result.
  KvTable::WatchResult Await(const std::vector<std::string>& keys, Millis timeout);

  std::shared_ptr<KvTable> table_;
};

}  // namespace cohort::collectives
