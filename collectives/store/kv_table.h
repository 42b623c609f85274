// The state behind MemoryStore and GrpcStoreServer: a thread-safe map of byte strings plus
// *watches*, callbacks that fire once when a set of keys all exist or when their deadline passes.
// Watches hold no thread: a pending watch is a map entry, and one timer thread per table fires
// the deadlines, so a server can keep thousands of waiting calls.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace cohort::collectives {

class KvTable {
 public:
  using Clock = std::chrono::steady_clock;
  using WatchId = uint64_t;

  enum class WatchStatus { kReady, kTimeout, kCancelled };

  struct WatchResult {
    WatchStatus status = WatchStatus::kCancelled;
    std::vector<std::string> values;   // kReady: the value of each watched key, in order
    std::vector<std::string> missing;  // otherwise: the watched keys that did not exist, in order
  };

  using WatchCallback = std::function<void(WatchResult)>;

  // A deadline `timeout` from now; a timeout <= 0 means now, a huge one means never.
  static Clock::time_point DeadlineAfter(std::chrono::milliseconds timeout);

  KvTable();
  // Calls every pending watch's callback with kCancelled, then stops the timer thread.
  ~KvTable();
  KvTable(const KvTable&) = delete;
  KvTable& operator=(const KvTable&) = delete;

  // Sets key to value and fires the watches this completes.
  void Set(const std::string& key, const std::string& value);

  // The value of key, or nullopt when absent.
  std::optional<std::string> Get(const std::string& key) const;

  // Adds delta to the decimal integer at key (absent counts as 0), returns the new value.
  // Throws InvalidArgument when the value is not a decimal integer or the sum overflows.
  int64_t Add(const std::string& key, int64_t delta);

  // Sets key to desired when it holds expected (an empty expected also matches an absent key);
  // returns what key holds afterwards ("" when absent).
  std::string CompareSet(const std::string& key, const std::string& expected,
                         const std::string& desired);

  // Removes key; returns whether it existed. Pending watches on it keep waiting.
  bool Delete(const std::string& key);

  // Every key starting with prefix, with its value.
  std::map<std::string, std::string> List(const std::string& prefix) const;

  // Number of keys stored.
  size_t Size() const;

  // Calls callback exactly once: with kReady (and the values) as soon as every key exists at the
  // same moment, with kTimeout (and the missing keys) at deadline, or with kCancelled from
  // Cancel() or the destructor. It runs on the thread that caused it (possibly inside this call
  // when the keys already exist or the deadline has passed, or inside Set/Add/CompareSet, the
  // timer thread, or Cancel) and never under the table's lock, so it may call the table. It must
  // not throw.
  WatchId Watch(std::vector<std::string> keys, Clock::time_point deadline, WatchCallback callback);

  // When watch id is still pending, calls its callback with kCancelled before returning and
  // returns true; returns false when it already fired (or never existed).
  bool Cancel(WatchId id);

  // Number of watches still pending.
  size_t NumWatches() const;

 private:
  struct PendingWatch {
    std::vector<std::string> keys;
    size_t registered = 0;  // number of distinct keys whose waiters_ entry holds this watch
    Clock::time_point deadline;
    WatchCallback callback;
  };
  using Fired = std::vector<std::pair<WatchCallback, WatchResult>>;

  // Called with mu_ held after key came into existence; moves completed watches into fired.
  void OnKeyCreatedLocked(const std::string& key, Fired* fired);
  // Registers watch id on its missing keys; returns how many it registered on.
  size_t RegisterLocked(WatchId id, const std::vector<std::string>& keys);
  // Removes a pending watch and returns its callback with the result for status.
  std::pair<WatchCallback, WatchResult> RemoveLocked(WatchId id, WatchStatus status);
  std::vector<std::string> MissingLocked(const std::vector<std::string>& keys) const;
  static void Deliver(Fired* fired);
  void TimerLoop();

  mutable std::mutex mu_;
  std::condition_variable timer_cv_;
  std::map<std::string, std::string> data_;
  std::unordered_map<WatchId, PendingWatch> watches_;
  std::unordered_map<std::string, std::unordered_set<WatchId>> waiters_;  // key -> watches
  std::set<std::pair<Clock::time_point, WatchId>> deadlines_;  // watches with a finite deadline
  WatchId next_id_ = 1;
  bool stop_ = false;
  std::thread timer_;
};

}  // namespace cohort::collectives
