#include "collectives/store/memory_store.h"

#include <future>

#include "collectives/store/store_errors.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

constexpr const char* kWhere = "memory store";

[[noreturn]] void ThrowClosed(const std::vector<std::string>& keys) {
  throw Unavailable(std::string(kWhere) + " was destroyed while waiting for " + QuoteKeys(keys));
}

}  // namespace

MemoryStore::MemoryStore() : MemoryStore(std::make_shared<KvTable>()) {}

MemoryStore::MemoryStore(std::shared_ptr<KvTable> table) : table_(std::move(table)) {
  if (!table_) throw InvalidArgument("MemoryStore needs a table, got a null pointer");
}

void MemoryStore::Set(const std::string& key, const std::string& value) { table_->Set(key, value); }

std::string MemoryStore::Get(const std::string& key, Millis timeout) {
  auto result = Await({key}, timeout);
  switch (result.status) {
    case KvTable::WatchStatus::kReady:
      return std::move(result.values.front());
    case KvTable::WatchStatus::kTimeout:
      ThrowGetTimeout(kWhere, key, std::max(timeout, Millis(0)));
    case KvTable::WatchStatus::kCancelled:
      break;
  }
  ThrowClosed({key});
}

int64_t MemoryStore::Add(const std::string& key, int64_t delta) { return table_->Add(key, delta); }

std::string MemoryStore::CompareSet(const std::string& key, const std::string& expected,
                                    const std::string& desired) {
  return table_->CompareSet(key, expected, desired);
}

bool MemoryStore::Delete(const std::string& key) { return table_->Delete(key); }

void MemoryStore::Wait(const std::vector<std::string>& keys, Millis timeout) {
  auto result = Await(keys, timeout);
  switch (result.status) {
    case KvTable::WatchStatus::kReady:
      return;
    case KvTable::WatchStatus::kTimeout:
      ThrowWaitTimeout(kWhere, result.missing, keys.size(), std::max(timeout, Millis(0)));
    case KvTable::WatchStatus::kCancelled:
      break;
  }
  ThrowClosed(keys);
}

std::map<std::string, std::string> MemoryStore::List(const std::string& prefix) {
  return table_->List(prefix);
}

KvTable::WatchResult MemoryStore::Await(const std::vector<std::string>& keys, Millis timeout) {
  auto promise = std::make_shared<std::promise<KvTable::WatchResult>>();
  auto future = promise->get_future();
  // The table's timer fires the deadline, so this wait always ends.
  table_->Watch(keys, KvTable::DeadlineAfter(timeout),
                [promise](KvTable::WatchResult r) { promise->set_value(std::move(r)); });
  return future.get();
}

}  // namespace cohort::collectives
