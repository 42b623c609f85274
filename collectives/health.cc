#include "collectives/health.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <sstream>

#include "common/error.h"
#include "common/log.h"

namespace cohort::collectives {
namespace {

// How often the publishing thread looks at this rank's state.
constexpr std::chrono::milliseconds kMinGap{50};
// An operation is published once it has run this long (and every heartbeat). A diagnosis needs
// no more: the operation that hangs is slow by definition, and a rank that never reached it shows
// an older number. Fast operations then cost the store nothing.
constexpr std::chrono::milliseconds kSlowOp{100};

std::string RankList(const std::vector<int>& ranks, const HealthMonitor::RankNamer& namer) {
  if (!namer)
    return fmt::format("{} {}", ranks.size() == 1 ? "rank" : "ranks", fmt::join(ranks, ","));
  std::vector<std::string> names;
  for (int r : ranks) names.push_back(namer(r));
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace

HealthMonitor::HealthMonitor(std::shared_ptr<Store> store, std::string scope, int rank, int size,
                             std::chrono::milliseconds interval, RankNamer namer)
    : store_(std::move(store)),
      prefix_(scope + "/health/"),
      rank_(rank),
      size_(size),
      interval_(interval),
      namer_(std::move(namer)) {
  Publish();  // so that a peer diagnosing a failure at our first op sees us
  thread_ = std::thread([this] { Loop(); });
}

HealthMonitor::~HealthMonitor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void HealthMonitor::Started(uint64_t seq, const char* name) {
  std::lock_guard<std::mutex> lock(mu_);
  started_ = seq;
  started_at_ = std::chrono::steady_clock::now();
  name_ = name;
  dirty_ = true;
  // No notify: the loop wakes within kMinGap and a notify would cost a syscall per collective.
}

void HealthMonitor::Completed(uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  completed_ = seq;
  dirty_ = true;
}

void HealthMonitor::Publish() {
  std::string value;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++beat_;
    value = fmt::format("{} {} {} {}", started_, completed_, beat_, name_);
    dirty_ = false;
  }
  try {
    store_->Set(prefix_ + std::to_string(rank_), value);
    if (warned_) {
      COHORT_INFO(kColl, "health reports reach the store again");
      warned_ = false;
    }
  } catch (const std::exception& e) {
    if (!warned_) {
      COHORT_WARN(kColl,
                  "cannot publish health to the store ({}); hang diagnosis will be "
                  "incomplete until it is reachable",
                  e.what());
      warned_ = true;
    }
  }
}

void HealthMonitor::Loop() {
  auto next_beat = std::chrono::steady_clock::now() + interval_;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, kMinGap, [this] { return stop_; });
    if (stop_) break;
    const auto now = std::chrono::steady_clock::now();
    const bool slow = dirty_ && started_ != completed_ && now - started_at_ >= kSlowOp;
    if (!slow && now < next_beat) continue;
    lock.unlock();
    Publish();
    next_beat = std::chrono::steady_clock::now() + interval_;
    lock.lock();
  }
}

std::vector<HealthMonitor::Report> HealthMonitor::ReadAll() {
  std::vector<Report> reports(size_);
  for (const auto& [key, value] : store_->List(prefix_)) {
    int r = -1;
    try {
      r = std::stoi(key.substr(prefix_.size()));
    } catch (...) {
      continue;
    }
    if (r < 0 || r >= size_) continue;
    std::istringstream in(value);
    Report& rep = reports[r];
    if (in >> rep.started >> rep.completed >> rep.beat) {
      in >> rep.name;
      rep.present = true;
    }
  }
  return reports;
}

HealthMonitor::Verdict HealthMonitor::Inspect(uint64_t seq, const std::string& name) {
  Verdict v;
  std::vector<Report> first, second;
  try {
    first = ReadAll();
    // A heartbeat that does not move over two intervals means the process is dead or frozen.
    std::this_thread::sleep_for(2 * interval_ + kMinGap);
    second = ReadAll();
  } catch (const std::exception& e) {
    v.text = fmt::format("the store could not be read to find the culprit ({})", e.what());
    return v;
  }
  std::vector<std::string> clauses;
  auto rank_name = [this](int r) { return namer_ ? namer_(r) : fmt::format("rank {}", r); };
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    const Report& a = first[r];
    const Report& b = second[r];
    if (!b.present) {
      v.missing.push_back(r);
      continue;
    }
    if (b.beat == a.beat && a.present) {
      v.silent.push_back(r);
      clauses.push_back(fmt::format(
          "{} stopped responding (no heartbeat for {:.1f} s; its last report: started #{} "
          "{}, completed #{})",
          rank_name(r), std::chrono::duration<double>(2 * interval_ + kMinGap).count(), b.started,
          b.name, b.completed));
    } else if (b.started < seq) {
      v.behind.push_back(r);
      clauses.push_back(fmt::format("{} never reached it (its last collective was #{} {})",
                                    rank_name(r), b.started, b.started == 0 ? "-" : b.name));
    }
  }
  if (!v.missing.empty()) {
    clauses.insert(clauses.begin(),
                   fmt::format("{} never reported to the store (not started, or dead before "
                               "its first collective)",
                               RankList(v.missing, namer_)));
  }
  if (clauses.empty()) {
    v.text = fmt::format(
        "every rank reached #{} {} and is alive: the ranks likely called different operations "
        "or sizes (set COHORT_DEBUG_COLLECTIVES=1 to check each call)",
        seq, name);
  } else {
    std::string text;
    for (size_t i = 0; i < clauses.size(); ++i) text += (i ? "; " : "") + clauses[i];
    v.text = text;
  }
  return v;
}

std::string HealthMonitor::Diagnose(uint64_t seq, const std::string& name) {
  return Inspect(seq, name).text;
}

}  // namespace cohort::collectives
