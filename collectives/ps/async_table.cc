#include "collectives/ps/async_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "collectives/ps/async_optimizer.h"
#include "common/log.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

std::string KeyOf(const pb::AsyncKey& k) { return fmt::format("{}\n{}", k.job(), k.part()); }

grpc::Status Refuse(grpc::StatusCode code, std::string why) {
  return grpc::Status(code, std::move(why));
}

// Floats out of a bytes field; false when its size is not n floats.
bool ReadFloats(const std::string& bytes, size_t n, std::vector<float>* out) {
  if (bytes.size() != n * sizeof(float)) return false;
  out->resize(n);
  if (n > 0) std::memcpy(out->data(), bytes.data(), bytes.size());
  return true;
}

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

size_t SizeOf(const std::vector<std::string_view>& runs) {
  size_t n = 0;
  for (const auto& r : runs) n += r.size();
  return n;
}

AsyncOptimizerConfig ConfigOf(const pb::AsyncOptimizer& o) {
  AsyncOptimizerConfig c;
  c.kind = o.kind() == pb::AsyncOptimizer::ADAM ? AsyncOptimizerConfig::Kind::kAdam
                                                : AsyncOptimizerConfig::Kind::kSgd;
  c.lr = o.lr();
  c.momentum = o.momentum();
  c.dampening = o.dampening();
  c.nesterov = o.nesterov();
  c.weight_decay = o.weight_decay();
  c.beta1 = o.beta1();
  c.beta2 = o.beta2();
  c.eps = o.eps();
  return c;
}

}  // namespace

struct AsyncTable::Partition {
  struct Pending {
    Waiter* waiter;
    int rank;
    int64_t step;
    int staleness;
    bool with_state;
    int ahead;  // steps the worker computes before it uses the answer (AsyncPushRequest.ahead)
    // The step the worker computes with the answer.
    int64_t Uses() const { return step + 1 + ahead; }
  };
  using Answers = std::vector<std::pair<Waiter*, AsyncAnswer>>;

  std::mutex mu;
  uint64_t epoch = 0;
  std::string job;
  uint32_t part = 0;
  AsyncOptimizerConfig optimizer;
  std::vector<float> params;
  AsyncSlots slots;
  std::vector<int64_t> clocks;  // by rank: steps pushed, counted from 0 (start_step included)
  std::vector<Pending> waiting;
  std::vector<float> scratch;  // the gradient being applied
  // The parameters' bytes as of the last push, made by the first answer after it.
  std::shared_ptr<const std::string> published;
  // For the log line: since the last one.
  int64_t logged_at = 0;
  int64_t max_lead = 0;
  int64_t waited = 0;
  int staleness = -1;  // the bound of the last pull, for the log

  int64_t MinClock() const { return *std::min_element(clocks.begin(), clocks.end()); }
  int64_t MaxClock() const { return *std::max_element(clocks.begin(), clocks.end()); }

  // The slowest worker has pushed every step before the one the answer is used for, minus
  // the staleness.
  bool Ready(const Pending& p) const {
    return p.staleness < 0 || MinClock() >= p.Uses() - p.staleness;
  }

  AsyncAnswer Reply(const Pending& p) {
    AsyncAnswer a;
    pb::AsyncParams& r = a.head;
    const int64_t min = MinClock();
    r.set_min_clock(min);
    r.set_max_clock(MaxClock());
    r.set_opt_steps(slots.steps);
    if (p.with_state) {
      r.set_slot1(Bytes(slots.slot1));
      r.set_slot2(Bytes(slots.slot2));
    }
    if (!published) published = std::make_shared<const std::string>(Bytes(params));
    a.params = published;
    // The worker computes step p.Uses() with these while the slowest computes step min.
    max_lead = std::max(max_lead, p.Uses() - min);
    staleness = p.staleness;
    return a;
  }

  // Answers every waiting call the bound now allows (into out, to send after unlocking).
  void Release(Answers& out) {
    auto it = waiting.begin();
    while (it != waiting.end()) {
      if (Ready(*it)) {
        out.emplace_back(it->waiter, Reply(*it));
        it = waiting.erase(it);
      } else {
        ++it;
      }
    }
  }

  void MaybeLog(int shard, int64_t every) {
    const int64_t min = MinClock();
    if (every <= 0 || min < logged_at + every) return;
    logged_at = min - min % every;
    COHORT_INFO(kColl,
                "ps-server shard {} async job {} part {}: clocks {}..{}, lead at most {} "
                "(staleness {}), {} pulls waited",
                shard, job, part, min, MaxClock(), max_lead,
                staleness < 0 ? std::string("none") : std::to_string(staleness), waited);
    max_lead = 0;
    waited = 0;
  }
};

AsyncTable::~AsyncTable() = default;

std::shared_ptr<AsyncTable::Partition> AsyncTable::Find(const pb::AsyncKey& key,
                                                        grpc::Status* why) {
  std::shared_ptr<Partition> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = parts_.find(KeyOf(key));
    if (it != parts_.end()) p = it->second;
  }
  if (!p) {
    *why = Refuse(grpc::StatusCode::FAILED_PRECONDITION,
                  fmt::format("ps-server shard {} holds no partition {} of async job {}: rank 0 "
                              "initialises it first (AsyncInit)",
                              shard_, key.part(), key.job()));
  } else if (p->epoch != key.epoch()) {
    *why = Refuse(grpc::StatusCode::FAILED_PRECONDITION,
                  fmt::format("ps-server shard {}: async job {} was restarted (epoch {:x}, this "
                              "call's is {:x}); the old workers' calls are refused",
                              shard_, key.job(), p->epoch, key.epoch()));
    p.reset();
  }
  return p;
}

grpc::Status AsyncTable::Init(const pb::AsyncInitRequest& req) {
  auto p = std::make_shared<Partition>();
  p->epoch = req.key().epoch();
  p->job = req.key().job();
  p->part = req.key().part();
  p->optimizer = ConfigOf(req.optimizer());
  if (std::string bad = p->optimizer.Invalid(); !bad.empty()) {
    return Refuse(grpc::StatusCode::INVALID_ARGUMENT, "AsyncInit: " + bad);
  }
  if (req.world() < 1 || req.start_step() < 0 || req.params().size() % sizeof(float) != 0) {
    return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                  fmt::format("AsyncInit: world {}, start_step {}, {} parameter bytes: need a "
                              "world >= 1, a step >= 0 and whole float32s",
                              req.world(), req.start_step(), req.params().size()));
  }
  const size_t n = req.params().size() / sizeof(float);
  (void)ReadFloats(req.params(), n, &p->params);
  const bool slot1 = !req.slot1().empty(), slot2 = !req.slot2().empty();
  if ((slot1 && !ReadFloats(req.slot1(), n, &p->slots.slot1)) ||
      (slot2 && !ReadFloats(req.slot2(), n, &p->slots.slot2)) ||
      (p->optimizer.kind == AsyncOptimizerConfig::Kind::kAdam && slot1 != slot2)) {
    return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                  "AsyncInit: the optimizer state's buffers do not match the parameters");
  }
  p->slots.steps = req.opt_steps();
  p->clocks.assign(static_cast<size_t>(req.world()), req.start_step());
  p->logged_at = req.start_step();
  std::shared_ptr<Partition> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = parts_[KeyOf(req.key())];
    if (slot && slot->epoch == p->epoch) {
      return Refuse(grpc::StatusCode::ALREADY_EXISTS,
                    fmt::format("AsyncInit: partition {} of async job {} epoch {:x} exists",
                                p->part, p->job, p->epoch));
    }
    old = std::exchange(slot, p);
  }
  if (old) {  // the calls of a job's earlier start fail now
    std::vector<Partition::Pending> pending;
    {
      std::lock_guard<std::mutex> lock(old->mu);
      pending.swap(old->waiting);
    }
    for (auto& w : pending) {
      w.waiter->Answer(Refuse(grpc::StatusCode::FAILED_PRECONDITION,
                              fmt::format("async job {} was restarted", p->job)),
                       {});
    }
  }
  return grpc::Status::OK;
}

void AsyncTable::Push(const pb::AsyncPushRequest& req, const std::vector<std::string_view>& grad,
                      Waiter* w) {
  grpc::Status why;
  std::shared_ptr<Partition> p = Find(req.key(), &why);
  if (!p) return w->Answer(why, {});
  Partition::Answers answers;
  {
    std::lock_guard<std::mutex> lock(p->mu);
    const auto world = static_cast<int>(p->clocks.size());
    if (req.rank() < 0 || req.rank() >= world) {
      why = Refuse(
          grpc::StatusCode::INVALID_ARGUMENT,
          fmt::format("AsyncPush: rank {} is outside the job's world of {}", req.rank(), world));
    } else if (req.step() != p->clocks[static_cast<size_t>(req.rank())]) {
      why = Refuse(grpc::StatusCode::FAILED_PRECONDITION,
                   fmt::format("AsyncPush: rank {} pushed step {}, but its next step is {}",
                               req.rank(), req.step(), p->clocks[static_cast<size_t>(req.rank())]));
    } else if (req.ahead() < 0 || req.ahead() > 1 || (req.ahead() == 1 && req.staleness() == 0)) {
      why = Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                   fmt::format("AsyncPush: ahead {} with staleness {}: ahead is 0, or 1 with a "
                               "staleness other than 0 (a pipelined push under BSP would wait "
                               "for the worker's own next push)",
                               req.ahead(), req.staleness()));
    } else if (const size_t bytes = SizeOf(grad); bytes != p->params.size() * sizeof(float)) {
      why = Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                   fmt::format("AsyncPush: {} gradient bytes for a partition of {} floats", bytes,
                               p->params.size()));
    } else {
      // The optimizer works on the gradient in place (weight decay): a copy, not the request's.
      p->scratch.resize(p->params.size());
      char* to = reinterpret_cast<char*>(p->scratch.data());
      for (const auto& run : grad) {
        std::memcpy(to, run.data(), run.size());
        to += run.size();
      }
      w->Applied();
      ApplyOptimizer(p->optimizer, p->params.data(), p->scratch.data(), p->params.size(), p->slots);
      p->published.reset();
      ++p->clocks[static_cast<size_t>(req.rank())];
      p->Release(answers);
      Partition::Pending mine{w, req.rank(), req.step(), req.staleness(), false, req.ahead()};
      if (p->Ready(mine)) {
        answers.emplace_back(w, p->Reply(mine));
      } else {
        ++p->waited;
        p->waiting.push_back(mine);
      }
      p->MaybeLog(shard_, log_every_);
    }
  }
  if (!why.ok()) return w->Answer(why, {});
  for (auto& [waiter, reply] : answers) waiter->Answer(grpc::Status::OK, std::move(reply));
}

void AsyncTable::Pull(const pb::AsyncPullRequest& req, Waiter* w) {
  grpc::Status why;
  std::shared_ptr<Partition> p = Find(req.key(), &why);
  if (!p) return w->Answer(why, {});
  AsyncAnswer reply;
  {
    std::lock_guard<std::mutex> lock(p->mu);
    if (req.rank() < 0 || req.rank() >= static_cast<int>(p->clocks.size())) {
      why = Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                   fmt::format("AsyncPull: rank {} is outside the job's world of {}", req.rank(),
                               p->clocks.size()));
    } else {
      Partition::Pending mine{w, req.rank(), req.step(), req.staleness(), req.with_state(), 0};
      if (!p->Ready(mine)) {
        ++p->waited;
        p->waiting.push_back(mine);
        return;
      }
      reply = p->Reply(mine);
    }
  }
  w->Answer(why, std::move(reply));
}

bool AsyncTable::Abandon(const pb::AsyncKey& key, Waiter* w) {
  std::shared_ptr<Partition> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = parts_.find(KeyOf(key));
    if (it == parts_.end()) return false;
    p = it->second;
  }
  std::lock_guard<std::mutex> lock(p->mu);
  auto it = std::find_if(p->waiting.begin(), p->waiting.end(),
                         [w](const Partition::Pending& q) { return q.waiter == w; });
  if (it == p->waiting.end()) return false;
  p->waiting.erase(it);
  return true;
}

}  // namespace cohort::collectives::ps
