#include "collectives/ps/async_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>

#include "collectives/ps/ps.grpc.pb.h"
#include "collectives/ps/ps_client.h"
#include "collectives/ps/wire.h"
#include "collectives/store/grpc_status.h"
#include "common/error.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

std::string FloatBytes(const float* p, size_t n) {
  return std::string(reinterpret_cast<const char*>(p), n * sizeof(float));
}

pb::AsyncOptimizer ToProto(const AsyncOptimizerConfig& c) {
  pb::AsyncOptimizer o;
  o.set_kind(c.kind == AsyncOptimizerConfig::Kind::kAdam ? pb::AsyncOptimizer::ADAM
                                                         : pb::AsyncOptimizer::SGD);
  o.set_lr(c.lr);
  o.set_momentum(c.momentum);
  o.set_dampening(c.dampening);
  o.set_nesterov(c.nesterov);
  o.set_weight_decay(c.weight_decay);
  o.set_beta1(c.beta1);
  o.set_beta2(c.beta2);
  o.set_eps(c.eps);
  return o;
}

}  // namespace

struct AsyncClient::Stubs {
  std::vector<std::unique_ptr<pb::PsAsyncService::Stub>> by_server;
};

// An answer as received: the AsyncParams but its params, whose bytes stay in gRPC's slices.
struct AsyncClient::Answer {
  std::vector<grpc::Slice> slices;
  pb::AsyncParams head;  // all but params
  size_t params_offset = 0, params_size = 0;
};

AsyncClient::AsyncClient(const PsOptions& options, AsyncJob job, size_t n,
                         std::chrono::milliseconds timeout)
    : job_(std::move(job)), n_(n), timeout_(timeout), stubs_(std::make_unique<Stubs>()) {
  if (options.servers.empty()) {
    throw InvalidArgument(
        "ps async mode needs parameter servers: set COHORT_PS_SERVERS=host:port,... (or run "
        "under `cohort launch --ps-servers N`)");
  }
  if (n == 0) throw InvalidArgument("ps async mode: the model has no parameters to train");
  const auto shards = static_cast<int>(options.servers.size());
  const auto deadline = std::chrono::system_clock::now() + timeout;
  for (int s = 0; s < shards; ++s) {
    servers_.push_back(std::make_shared<PsServerClient>(options.servers[static_cast<size_t>(s)], s,
                                                        shards, options.token));
  }
  for (auto& server : servers_) {
    server->Connect(deadline);
    stubs_->by_server.push_back(pb::PsAsyncService::NewStub(server->Channel()));
  }
  // Equal partitions, at least one per server, none over partition_bytes.
  const size_t per = std::max<size_t>(1, options.partition_bytes / sizeof(float));
  size_t count = std::max((n + per - 1) / per, servers_.size());
  count = std::min(count, n);
  for (size_t i = 0; i < count; ++i) {
    const size_t begin = n * i / count, end = n * (i + 1) / count;
    parts_.push_back(Part{begin, end - begin, i % servers_.size()});
  }
}

AsyncClient::~AsyncClient() = default;

pb::AsyncKey AsyncClient::Key(size_t part) const {
  pb::AsyncKey k;
  k.set_job(job_.job);
  k.set_epoch(job_.epoch);
  k.set_part(static_cast<uint32_t>(part));
  return k;
}

// The calls of one step, one per partition: how many are still out, and the first failure.
// Destroyed only once every call has ended (it cancels those still out).
struct AsyncClient::Calls {
  std::mutex mu;
  std::condition_variable cv;
  size_t pending = 0;
  grpc::Status failure;
  size_t failed_part = 0;
  bool failed = false;
  std::deque<grpc::ClientContext> contexts;
  std::vector<grpc::ByteBuffer> reqs, replies;  // of encoded calls
  // For errors: "push of step 7", and the step the slowest worker must have pushed (a bound).
  std::string what;
  std::optional<int64_t> waits_for;

  void Ended(size_t part, grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    if (!s.ok() && !failed) {
      failed = true;
      failure = std::move(s);
      failed_part = part;
    }
    --pending;
    cv.notify_all();
  }
  // Waits until every call ended, or one failed and then every other was cancelled.
  void Await() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return pending == 0 || failed; });
    if (pending > 0) CancelAndWait(lock);
  }
  ~Calls() {
    std::unique_lock<std::mutex> lock(mu);
    if (pending > 0) CancelAndWait(lock);
  }

 private:
  void CancelAndWait(std::unique_lock<std::mutex>& lock) {
    for (auto& ctx : contexts) ctx.TryCancel();
    cv.wait(lock, [&] { return pending == 0; });
  }
};

template <typename Start>
std::unique_ptr<AsyncClient::Calls> AsyncClient::Launch(const Start& start, std::string what,
                                                        std::optional<int64_t> waits_for,
                                                        std::vector<grpc::ByteBuffer> reqs) {
  auto calls = std::make_unique<Calls>();
  calls->what = std::move(what);
  calls->waits_for = waits_for;
  calls->reqs = std::move(reqs);
  calls->replies.resize(calls->reqs.size());
  const auto deadline = std::chrono::system_clock::now() + timeout_;
  for (size_t i = 0; i < parts_.size(); ++i) {
    grpc::ClientContext& ctx = calls->contexts.emplace_back();
    servers_[parts_[i].server]->Authorize(&ctx);
    ctx.set_deadline(deadline);
  }
  for (size_t i = 0; i < parts_.size(); ++i) {
    {
      // Counted as each starts: were a start to throw, ~Calls waits only for those that did.
      std::lock_guard<std::mutex> lock(calls->mu);
      ++calls->pending;
    }
    try {
      start(i, *calls, &calls->contexts[i],
            [c = calls.get(), i](grpc::Status s) { c->Ended(i, std::move(s)); });
    } catch (...) {
      std::lock_guard<std::mutex> lock(calls->mu);
      --calls->pending;
      throw;
    }
  }
  return calls;
}

void AsyncClient::Await(Calls& calls) const {
  calls.Await();
  if (!calls.failed) return;
  const Part& part = parts_[calls.failed_part];
  const PsServerClient& server = *servers_[part.server];
  const grpc::Status& s = calls.failure;
  const std::string where = fmt::format("ps {} partition {} ({} floats): {}", server.Name(),
                                        calls.failed_part, part.size, calls.what);
  switch (s.error_code()) {
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      throw Timeout(fmt::format(
          "{}: no answer within {:.1f} s{}; is a worker stuck or gone, or the server?", where,
          std::chrono::duration<double>(timeout_).count(),
          job_.staleness >= 0 && calls.waits_for
              ? fmt::format(" (staleness {}: it waits until the slowest worker pushed step {})",
                            job_.staleness, *calls.waits_for)
              : ""));
    case grpc::StatusCode::UNAVAILABLE:
      throw Unavailable(
          fmt::format("lost {}: {} (gRPC UNAVAILABLE); did its `cohort ps-server "
                      "--shard {}` exit?",
                      where, s.error_message(), server.Shard()));
    case grpc::StatusCode::PERMISSION_DENIED:
      throw Unauthenticated(
          fmt::format("{} refused: {} (gRPC PERMISSION_DENIED); give workers and "
                      "servers the same COHORT_TOKEN",
                      where, s.error_message()));
    default:
      ThrowError(
          ErrorKindFromGrpc(s.error_code()),
          fmt::format("{}: {} (gRPC {})", where, s.error_message(), GrpcCodeName(s.error_code())));
  }
}

AsyncClocks AsyncClient::Clocks(const std::vector<Answer>& answers) const {
  AsyncClocks c{answers.front().head.min_clock(), answers.front().head.max_clock()};
  for (const auto& a : answers) {
    c.min = std::min(c.min, a.head.min_clock());
    c.max = std::max(c.max, a.head.max_clock());
  }
  return c;
}

void AsyncClient::Init(const AsyncOptimizerConfig& optimizer, int64_t start_step,
                       const float* params, const AsyncState& state) {
  if (std::string bad = optimizer.Invalid(); !bad.empty()) {
    throw InvalidArgument("ps async mode: the optimizer's " + bad);
  }
  if ((!state.slot1.empty() && state.slot1.size() != n_) ||
      (!state.slot2.empty() && state.slot2.size() != n_)) {
    throw InvalidArgument("ps async mode: the optimizer state does not match the parameters");
  }
  std::vector<pb::AsyncInitRequest> reqs(parts_.size());
  std::vector<pb::AsyncInitReply> replies(parts_.size());
  for (size_t i = 0; i < parts_.size(); ++i) {
    const Part& p = parts_[i];
    pb::AsyncInitRequest& r = reqs[i];
    *r.mutable_key() = Key(i);
    r.set_world(job_.world);
    *r.mutable_optimizer() = ToProto(optimizer);
    r.set_start_step(start_step);
    r.set_opt_steps(state.opt_steps);
    r.set_params(FloatBytes(params + p.begin, p.size));
    if (!state.slot1.empty()) r.set_slot1(FloatBytes(state.slot1.data() + p.begin, p.size));
    if (!state.slot2.empty()) r.set_slot2(FloatBytes(state.slot2.data() + p.begin, p.size));
  }
  auto calls = Launch(
      [&](size_t i, Calls&, grpc::ClientContext* ctx, std::function<void(grpc::Status)> done) {
        stubs_->by_server[parts_[i].server]->async()->AsyncInit(ctx, &reqs[i], &replies[i],
                                                                std::move(done));
      },
      "init", std::nullopt, {});
  Await(*calls);
}

// Encoded calls and answers, so that a gradient goes out from the caller's buffer and the
// parameters come back in gRPC's receive buffers, each copied once: into the caller's buffer.
namespace {
constexpr char kPushMethod[] = "/cohort.ps.PsAsyncService/AsyncPush";
constexpr char kPullMethod[] = "/cohort.ps.PsAsyncService/AsyncPull";
}  // namespace

std::unique_ptr<AsyncClient::Calls> AsyncClient::Send(const char* method,
                                                      std::vector<grpc::ByteBuffer> reqs,
                                                      std::string what,
                                                      std::optional<int64_t> waits_for) {
  return Launch(
      [&](size_t i, Calls& c, grpc::ClientContext* ctx, std::function<void(grpc::Status)> done) {
        servers_[parts_[i].server]->CallRaw(ctx, method, &c.reqs[i], &c.replies[i],
                                            std::move(done));
      },
      std::move(what), waits_for, std::move(reqs));
}

std::vector<AsyncClient::Answer> AsyncClient::Answers(Calls& calls) const {
  Await(calls);
  std::vector<grpc::ByteBuffer>& replies = calls.replies;
  const std::string& what = calls.what;
  std::vector<Answer> answers(parts_.size());
  for (size_t i = 0; i < parts_.size(); ++i) {
    Answer& a = answers[i];
    std::string rest;
    const bool ok = replies[i].Dump(&a.slices).ok() &&
                    SplitBytesField(a.slices, pb::AsyncParams::kParamsFieldNumber, &rest,
                                    &a.params_offset, &a.params_size) &&
                    a.head.ParseFromString(rest);
    if (!ok || a.params_size != parts_[i].size * sizeof(float)) {
      throw Internal(fmt::format(
          "ps {}: its answer to the {} for partition {} ({} floats) is not the partition's "
          "AsyncParams",
          servers_[parts_[i].server]->Name(), what, i, parts_[i].size));
    }
  }
  return answers;
}

template <typename Runs>
void AsyncClient::CheckRuns(const Runs& runs, const char* what) const {
  size_t n = 0;
  for (const auto& r : runs) n += r.second;
  if (n != n_) {
    throw InvalidArgument(fmt::format("ps async mode: {} {} floats in {} runs for a vector of {}",
                                      what, n, runs.size(), n_));
  }
}

namespace {

// Calls run(part of run r, offset of that part in [begin, end)) for each run's part in
// [begin, end) of the flat vector the runs hold in order.
template <typename Runs, typename Run>
void ForEachOverlap(const Runs& runs, size_t begin, size_t end, Run&& run) {
  size_t at = 0;  // where runs[r] starts in the vector
  for (const auto& [data, count] : runs) {
    const size_t lo = std::max(at, begin), hi = std::min(at + count, end);
    if (lo < hi) run(data + (lo - at), hi - lo, lo - begin);
    at += count;
    if (at >= end) return;
  }
}

}  // namespace

void AsyncClient::StartPush(int64_t step, const float* grad, int ahead) {
  StartPush(step, ConstFloatRuns{{grad, n_}}, ahead);
}

void AsyncClient::StartPush(int64_t step, const ConstFloatRuns& grad, int ahead) {
  CheckRuns(grad, "a push of");
  if (ahead < 0 || ahead > 1 || (ahead == 1 && job_.staleness == 0)) {
    throw InvalidArgument(fmt::format(
        "ps async mode: a push {} step ahead with staleness {}: ahead is 0, or 1 with a "
        "staleness other than 0 (under BSP each step waits for the previous push's answer)",
        ahead, job_.staleness));
  }
  if (push_) {
    throw InvalidArgument(
        fmt::format("ps async mode: push of step {} while the {} is out; FinishPush it first", step,
                    push_->what));
  }
  std::vector<grpc::ByteBuffer> reqs(parts_.size());
  for (size_t i = 0; i < parts_.size(); ++i) {
    pb::AsyncPushRequest r;
    *r.mutable_key() = Key(i);
    r.set_rank(job_.rank);
    r.set_step(step);
    r.set_staleness(job_.staleness);
    r.set_ahead(ahead);
    std::vector<std::string_view> runs;
    ForEachOverlap(grad, parts_[i].begin, parts_[i].begin + parts_[i].size,
                   [&](const float* p, size_t count, size_t) {
                     runs.emplace_back(reinterpret_cast<const char*>(p), count * sizeof(float));
                   });
    reqs[i] =
        WithBorrowedBytesField(r.SerializeAsString(), pb::AsyncPushRequest::kGradFieldNumber, runs);
  }
  push_ = Send(kPushMethod, std::move(reqs), fmt::format("push of step {}", step),
               step + ahead - job_.staleness);
}

AsyncClocks AsyncClient::FinishPush(float* params) { return FinishPush(FloatRuns{{params, n_}}); }

AsyncClocks AsyncClient::FinishPush(const FloatRuns& params) {
  CheckRuns(params, "an answer into");
  if (!push_) throw InvalidArgument("ps async mode: FinishPush with no push out; StartPush first");
  const std::unique_ptr<Calls> calls = std::move(push_);
  // Every call has ended before an answer is copied: params may be the gradient's buffer.
  const std::vector<Answer> answers = Answers(*calls);
  for (size_t i = 0; i < parts_.size(); ++i) {
    const Answer& a = answers[i];
    ForEachOverlap(params, parts_[i].begin, parts_[i].begin + parts_[i].size,
                   [&](float* p, size_t count, size_t from) {
                     CopyFromSlices(a.slices, a.params_offset + from * sizeof(float),
                                    count * sizeof(float), p);
                   });
  }
  return Clocks(answers);
}

AsyncClocks AsyncClient::Push(int64_t step, const float* grad, float* params) {
  StartPush(step, grad, /*ahead=*/0);
  return FinishPush(params);
}

AsyncClocks AsyncClient::Pull(int64_t step, float* params, AsyncState* state) {
  std::vector<grpc::ByteBuffer> reqs(parts_.size());
  for (size_t i = 0; i < parts_.size(); ++i) {
    pb::AsyncPullRequest r;
    *r.mutable_key() = Key(i);
    r.set_rank(job_.rank);
    r.set_step(step);
    r.set_staleness(job_.staleness);
    r.set_with_state(state != nullptr);
    bool own = false;
    (void)grpc::SerializationTraits<pb::AsyncPullRequest>::Serialize(r, &reqs[i], &own);
  }
  if (push_) {
    throw InvalidArgument(
        fmt::format("ps async mode: pull while the {} is out; FinishPush it first", push_->what));
  }
  const std::unique_ptr<Calls> calls = Send(
      kPullMethod, std::move(reqs), fmt::format("pull after step {}", step), step - job_.staleness);
  const std::vector<Answer> answers = Answers(*calls);
  if (state) {
    const pb::AsyncParams& first = answers.front().head;
    state->opt_steps = first.opt_steps();
    state->slot1.assign(first.slot1().empty() ? 0 : n_, 0.0f);
    state->slot2.assign(first.slot2().empty() ? 0 : n_, 0.0f);
  }
  for (size_t i = 0; i < parts_.size(); ++i) {
    const Answer& a = answers[i];
    const size_t bytes = parts_[i].size * sizeof(float);
    auto matches = [&](const std::string& got, const std::vector<float>& slot) {
      return got.empty() ? slot.empty() : got.size() == bytes && !slot.empty();
    };
    if (state && !(matches(a.head.slot1(), state->slot1) && matches(a.head.slot2(), state->slot2))) {
      throw Internal(fmt::format(
          "ps {}: its optimizer state for partition {} does not match the partition's {} floats",
          servers_[parts_[i].server]->Name(), i, parts_[i].size));
    }
    CopyFromSlices(a.slices, a.params_offset, a.params_size, params + parts_[i].begin);
    if (state && !state->slot1.empty())
      std::memcpy(state->slot1.data() + parts_[i].begin, a.head.slot1().data(), bytes);
    if (state && !state->slot2.empty())
      std::memcpy(state->slot2.data() + parts_[i].begin, a.head.slot2().data(), bytes);
  }
  return Clocks(answers);
}

}  // namespace cohort::collectives::ps
