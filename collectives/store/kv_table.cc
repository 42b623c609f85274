#include "collectives/store/kv_table.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>

#include "collectives/store/store_errors.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

// Parses a whole string as a signed decimal integer.
std::optional<int64_t> ParseInt(const std::string& s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size() || s.find_first_not_of("0123456789", i) != std::string::npos) {
    return std::nullopt;
  }
  errno = 0;
  long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return static_cast<int64_t>(v);
}

// A far-away deadline counts as "never": it stays out of the timer's queue.
constexpr auto kNever = KvTable::Clock::time_point::max();

}  // namespace

KvTable::Clock::time_point KvTable::DeadlineAfter(std::chrono::milliseconds timeout) {
  const auto now = Clock::now();
  if (timeout.count() <= 0) return now;
  // More than ~100 years is "forever"; also keeps now + timeout from overflowing.
  if (timeout > std::chrono::hours(24 * 365 * 100)) return kNever;
  return now + timeout;
}

KvTable::KvTable() : timer_([this] { TimerLoop(); }) {}

KvTable::~KvTable() {
  Fired fired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    while (!watches_.empty()) {
      fired.push_back(RemoveLocked(watches_.begin()->first, WatchStatus::kCancelled));
    }
  }
  timer_cv_.notify_all();
  timer_.join();
  Deliver(&fired);
}

void KvTable::Set(const std::string& key, const std::string& value) {
  Fired fired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_[key] = value;
    OnKeyCreatedLocked(key, &fired);
  }
  Deliver(&fired);
}

std::optional<std::string> KvTable::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = data_.find(key);
  if (it == data_.end()) return std::nullopt;
  return it->second;
}

int64_t KvTable::Add(const std::string& key, int64_t delta) {
  Fired fired;
  int64_t result = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    int64_t current = 0;
    if (it != data_.end()) {
      auto parsed = ParseInt(it->second);
      if (!parsed) {
        throw InvalidArgument(fmt::format(
            "store Add({}, {}): the key holds {}, which is not a decimal integer; use a key "
            "that only Add writes",
            QuoteKey(key), delta, QuoteKey(it->second.substr(0, 32))));
      }
      current = *parsed;
    }
    if (__builtin_add_overflow(current, delta, &result)) {
      throw InvalidArgument(fmt::format("store Add({}, {}): {} + {} overflows a 64-bit integer",
                                        QuoteKey(key), delta, current, delta));
    }
    data_[key] = std::to_string(result);
    OnKeyCreatedLocked(key, &fired);
  }
  Deliver(&fired);
  return result;
}

std::string KvTable::CompareSet(const std::string& key, const std::string& expected,
                                const std::string& desired) {
  Fired fired;
  std::string result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    const bool matches = it == data_.end() ? expected.empty() : it->second == expected;
    if (!matches) return it == data_.end() ? std::string() : it->second;
    data_[key] = desired;
    result = desired;
    OnKeyCreatedLocked(key, &fired);
  }
  Deliver(&fired);
  return result;
}

bool KvTable::Delete(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.erase(key) > 0;
}

std::map<std::string, std::string> KvTable::List(const std::string& prefix) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, std::string> out;
  for (auto it = data_.lower_bound(prefix);
       it != data_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    out.emplace_hint(out.end(), it->first, it->second);
  }
  return out;
}

size_t KvTable::Size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.size();
}

KvTable::WatchId KvTable::Watch(std::vector<std::string> keys, Clock::time_point deadline,
                                WatchCallback callback) {
  Fired fired;
  WatchId id;
  bool earliest = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    auto& w = watches_[id];
    w.keys = std::move(keys);
    w.deadline = deadline;
    w.callback = std::move(callback);
    w.registered = RegisterLocked(id, w.keys);
    if (w.registered == 0) {
      fired.push_back(RemoveLocked(id, WatchStatus::kReady));
    } else if (deadline <= Clock::now()) {
      fired.push_back(RemoveLocked(id, WatchStatus::kTimeout));
    } else if (deadline != kNever) {
      earliest = deadlines_.empty() || deadline < deadlines_.begin()->first;
      deadlines_.emplace(deadline, id);
    }
  }
  if (earliest) timer_cv_.notify_one();
  Deliver(&fired);
  return id;
}

bool KvTable::Cancel(WatchId id) {
  Fired fired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (watches_.count(id) == 0) return false;
    fired.push_back(RemoveLocked(id, WatchStatus::kCancelled));
  }
  Deliver(&fired);
  return true;
}

size_t KvTable::NumWatches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return watches_.size();
}

void KvTable::OnKeyCreatedLocked(const std::string& key, Fired* fired) {
  // Extract first: re-registering below inserts into waiters_, which may rehash it.
  auto node = waiters_.extract(key);
  if (node.empty()) return;
  for (WatchId id : node.mapped()) {
    auto it = watches_.find(id);
    if (it == watches_.end()) continue;
    PendingWatch& w = it->second;
    if (--w.registered > 0) continue;
    // Every key this watch waited for was created; one may have been deleted since.
    w.registered = RegisterLocked(id, w.keys);
    if (w.registered == 0) fired->push_back(RemoveLocked(id, WatchStatus::kReady));
  }
}

size_t KvTable::RegisterLocked(WatchId id, const std::vector<std::string>& keys) {
  size_t n = 0;
  for (const auto& key : keys) {
    if (data_.count(key) != 0) continue;
    if (waiters_[key].insert(id).second) ++n;  // a key listed twice counts once
  }
  return n;
}

std::pair<KvTable::WatchCallback, KvTable::WatchResult> KvTable::RemoveLocked(WatchId id,
                                                                              WatchStatus status) {
  auto node = watches_.extract(id);
  PendingWatch& w = node.mapped();
  if (w.deadline != kNever) deadlines_.erase({w.deadline, id});
  for (const auto& key : w.keys) {
    auto it = waiters_.find(key);
    if (it == waiters_.end()) continue;
    it->second.erase(id);
    if (it->second.empty()) waiters_.erase(it);
  }
  WatchResult result;
  result.status = status;
  if (status == WatchStatus::kReady) {
    result.values.reserve(w.keys.size());
    for (const auto& key : w.keys) result.values.push_back(data_.at(key));
  } else {
    result.missing = MissingLocked(w.keys);
  }
  return {std::move(w.callback), std::move(result)};
}

std::vector<std::string> KvTable::MissingLocked(const std::vector<std::string>& keys) const {
  std::vector<std::string> missing;
  for (const auto& key : keys) {
    if (data_.count(key) == 0) missing.push_back(key);
  }
  return missing;
}

void KvTable::Deliver(Fired* fired) {
  for (auto& [callback, result] : *fired) callback(std::move(result));
  fired->clear();
}

void KvTable::TimerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (deadlines_.empty()) {
      timer_cv_.wait(lock);
      continue;
    }
    const auto next = deadlines_.begin()->first;
    if (Clock::now() < next) {
      timer_cv_.wait_until(lock, next);
      continue;
    }
    Fired fired;
    const auto now = Clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      fired.push_back(RemoveLocked(deadlines_.begin()->second, WatchStatus::kTimeout));
    }
    lock.unlock();
    Deliver(&fired);
    lock.lock();
  }
}

}  // namespace cohort::collectives
