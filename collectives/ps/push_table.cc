#include "collectives/ps/push_table.h"

#include <fmt/format.h>

#include "collectives/ps/push_combine.h"
#include "common/log.h"

namespace cohort::collectives::ps {
namespace {

// Failed rounds remembered; past this the oldest job's leftovers are forgotten (a late push of
// one then waits for its deadline instead of failing at once).
constexpr size_t kMaxFailed = 100000;

// Keys end with "\n<seq>/<part>"; the join is collective #0.
bool IsJoin(const std::string& key) {
  const size_t nl = key.rfind('\n');
  return nl != std::string::npos && key.compare(nl + 1, 2, "0/") == 0;
}

}  // namespace

std::string PushTable::Key(const ::cohort::ps::PushRequest& p) {
  return fmt::format("{}\n{}/{}", p.scope(), p.seq(), p.part());
}

void PushTable::AnswerAll(const std::vector<Waiter*>& waiters, const grpc::Status& status) {
  for (Waiter* w : waiters) w->Answer(status, nullptr);
}

std::vector<PushTable::Waiter*> PushTable::FailLocked(const std::string& key,
                                                      const grpc::Status& why) {
  std::vector<Waiter*> waiters;
  auto it = rounds_.find(key);
  if (it != rounds_.end()) {
    for (Waiter* w : it->second.by_rank) {
      if (w) waiters.push_back(w);
    }
    rounds_.erase(it);
  }
  // A failed join (collective #0) is not remembered: the next job with the same scope joins
  // under that same key, and every later collective carries the epoch the join agreed on.
  if (!IsJoin(key)) {
    if (failed_.size() >= kMaxFailed) failed_.clear();
    failed_.emplace(key, why);
  }
  return waiters;
}

const grpc::Status* PushTable::FailedLocked(const std::string& key,
                                            const std::string& scope) const {
  if (auto f = failed_.find(key); f != failed_.end()) return &f->second;
  if (auto l = left_.find(scope); l != left_.end()) return &l->second;
  return nullptr;
}

void PushTable::Push(Waiter* w) {
  const auto& req = w->Request();
  if (std::string bad = CheckPush(req, w->DataSize()); !bad.empty()) {
    w->Answer(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, bad), nullptr);
    return;
  }
  const std::string key = Key(req);
  std::vector<Waiter*> waiters;
  std::unique_lock<std::mutex> lock(mu_);
  if (const grpc::Status* failed = FailedLocked(key, req.scope())) {
    const grpc::Status why = *failed;
    lock.unlock();
    w->Answer(why, nullptr);
    return;
  }
  Round& round = rounds_[key];
  if (round.by_rank.empty()) round.by_rank.resize(static_cast<size_t>(req.world()), nullptr);
  for (Waiter* other : round.by_rank) {
    if (!other) continue;
    std::string mismatch = Mismatch(other->Request(), req);
    if (mismatch.empty()) break;  // all arrived pushes agree with each other: one check is enough
    waiters = FailLocked(key, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, mismatch));
    waiters.push_back(w);
    lock.unlock();
    COHORT_WARN(kColl, "ps: {}", mismatch);
    AnswerAll(waiters, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, mismatch));
    return;
  }
  Waiter*& slot = round.by_rank[static_cast<size_t>(req.rank())];
  if (slot) {
    lock.unlock();
    w->Answer(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                           fmt::format("{}: rank {} pushed it twice; are two workers running "
                                       "with the same COHORT_RANK?",
                                       DescribePush(req), req.rank())),
              nullptr);
    return;
  }
  slot = w;
  if (++round.arrived < req.world()) return;
  waiters = std::move(round.by_rank);
  rounds_.erase(key);
  lock.unlock();

  std::vector<const ::cohort::ps::PushRequest*> pushes;
  std::vector<std::vector<std::string_view>> data;
  pushes.reserve(waiters.size());
  data.reserve(waiters.size());
  for (Waiter* x : waiters) {
    pushes.push_back(&x->Request());
    data.push_back(x->Data());
  }
  auto result = std::make_shared<const std::string>(Combine(pushes, data));
  const bool broadcast = req.kind() == ::cohort::ps::BROADCAST;
  for (size_t r = 0; r < waiters.size(); ++r) {
    const bool root = broadcast && static_cast<int>(r) == req.root();
    waiters[r]->Answer(grpc::Status::OK, root ? nullptr : result);
  }
}

void PushTable::Abandon(Waiter* w) {
  const auto& req = w->Request();
  const std::string key = Key(req);
  std::vector<Waiter*> waiters;
  grpc::Status why(grpc::StatusCode::ABORTED,
                   fmt::format("{}: rank {} gave up on it (its call was cancelled: it failed "
                               "elsewhere, passed its timeout, or died)",
                               DescribePush(req), req.rank()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = rounds_.find(key);
    if (it == rounds_.end()) return;
    const auto& by_rank = it->second.by_rank;
    const size_t r = static_cast<size_t>(req.rank());
    if (r >= by_rank.size() || by_rank[r] != w) return;
    waiters = FailLocked(key, why);
  }
  AnswerAll(waiters, why);
}

void PushTable::Left(const std::string& scope, int rank) {
  const grpc::Status why(
      grpc::StatusCode::ABORTED,
      fmt::format("rank {} left this communicator (its process died, or closed it) before "
                  "every rank had finished its collectives",
                  rank));
  const std::string prefix = scope + "\n";
  std::vector<Waiter*> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = rounds_.begin(); it != rounds_.end();) {
      if (it->first.compare(0, prefix.size(), prefix) != 0) {
        ++it;
        continue;
      }
      for (Waiter* w : it->second.by_rank) {
        if (w) waiters.push_back(w);
      }
      it = rounds_.erase(it);
    }
    if (left_.size() >= kMaxFailed) left_.clear();
    left_.emplace(scope, why);
  }
  if (!waiters.empty())
    COHORT_WARN(kColl, "ps: {}: failing {} pending pushes", why.error_message(), waiters.size());
  AnswerAll(waiters, why);
}

size_t PushTable::Pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rounds_.size();
}

}  // namespace cohort::collectives::ps
