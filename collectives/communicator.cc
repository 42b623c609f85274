#include "collectives/communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "collectives/op_counters.h"
#include "collectives/scope.h"
#include "common/env.h"
#include "common/log.h"

namespace cohort::collectives {
namespace {

std::chrono::milliseconds Millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0 + 0.5));
}

}  // namespace

CommConfig CommConfig::FromEnv(int rank, int size, std::shared_ptr<Store> store) {
  CommConfig c;
  c.rank = rank;
  c.size = size;
  c.store = std::move(store);
  c.timeout = Millis(env::kTimeout.Seconds(300));
  c.connect_timeout = Millis(env::kStoreTimeout.Seconds(60));
  c.heartbeat = Millis(env::kHeartbeat.Seconds(0.5));
  c.debug_checks = env::kDebugCollectives.Bool(false);
  c.run_id = env::kRunId.Str("default");
  c.restart = static_cast<int>(env::kRestart.Int(0));
  return c;
}

std::string ScopeOf(const CommConfig& config) {
  return fmt::format("cohort/{}/{}/comm/{}", config.run_id, config.restart, config.name);
}

std::string Communicator::Scope() const { return ScopeOf(config_); }

Communicator::Communicator(const CommConfig& config)
    : config_(config), rank_(config.rank), size_(config.size) {
  if (size_ < 1) {
    throw InvalidArgument(fmt::format("world size is {}; it must be at least 1", size_));
  }
  if (rank_ < 0 || rank_ >= size_) {
    throw InvalidArgument(fmt::format("rank {} is outside the world of {} ranks (valid: 0..{})",
                                      rank_, size_, size_ - 1));
  }
  if (config_.timeout.count() <= 0) {
    throw InvalidArgument("the collective timeout must be positive (COHORT_TIMEOUT, seconds)");
  }
  if (!config_.global_ranks.empty() && config_.global_ranks.size() != static_cast<size_t>(size_)) {
    throw InvalidArgument(fmt::format("group {} has {} ranks but {} global ranks", config_.group,
                                      size_, config_.global_ranks.size()));
  }
  if (config_.store && size_ > 1) {
    HealthMonitor::RankNamer namer;  // a group's verdicts name both numberings
    if (!config_.group.empty()) namer = [this](int r) { return RankName(r); };
    health_ = std::make_unique<HealthMonitor>(config_.store, Scope(), rank_, size_,
                                              config_.heartbeat, std::move(namer));
  }
}

Communicator::~Communicator() = default;

void Communicator::CheckDevice(const TensorView& t, const char* what) const {
  if (t.count > 0 && t.data == nullptr) {
    throw InvalidArgument(
        fmt::format("{}: {} has {} elements but a null data pointer", what, t.ToString(), t.count));
  }
  if (t.device.type != Devices()) {
    throw InvalidArgument(fmt::format(
        "{}: backend {} moves {} tensors but got a {} tensor; use {}", what, Backend(),
        Devices() == DeviceType::kCPU ? "CPU" : "CUDA", t.device.ToString(),
        t.device.type == DeviceType::kCUDA ? "the nccl backend (or copy the tensor to the CPU)"
                                           : "a CUDA tensor, or the gloo or mpi backend"));
  }
}

void Communicator::CheckRank(int r, const char* what) const {
  if (r < 0 || r >= size_) {
    throw InvalidArgument(fmt::format("{} rank {} is outside the world of {} ranks (valid: 0..{})",
                                      what, r, size_, size_ - 1));
  }
}

WorkPtr Communicator::AllReduce(TensorView buf, ReduceOp op, const OpOptions& opts) {
  return AllReduce(buf, buf, op, opts);
}

WorkPtr Communicator::AllReduce(TensorView in, TensorView out, ReduceOp op, const OpOptions& opts) {
  CheckDevice(in, "allreduce");
  CheckDevice(out, "allreduce");
  if (in.dtype != out.dtype || in.count != out.count) {
    throw InvalidArgument(fmt::format(
        "allreduce: in is {} but out is {}; they must have the same dtype and element count",
        in.ToString(), out.ToString()));
  }
  return Start(OpType::kAllReduce, in, out, op, -1, opts);
}

WorkPtr Communicator::Broadcast(TensorView buf, int root, const OpOptions& opts) {
  CheckDevice(buf, "broadcast");
  CheckRank(root, "broadcast: root");
  return Start(OpType::kBroadcast, buf, buf, ReduceOp::kSum, root, opts);
}

WorkPtr Communicator::AllGather(TensorView in, TensorView out, const OpOptions& opts) {
  CheckDevice(in, "allgather");
  CheckDevice(out, "allgather");
  if (in.dtype != out.dtype || out.count != in.count * size_) {
    throw InvalidArgument(fmt::format(
        "allgather: out is {} but must hold in ({}) from each of {} ranks: {} {} elements",
        out.ToString(), in.ToString(), size_, in.count * size_, DTypeName(in.dtype)));
  }
  return Start(OpType::kAllGather, in, out, ReduceOp::kSum, -1, opts);
}

WorkPtr Communicator::ReduceScatter(TensorView in, TensorView out, ReduceOp op,
                                    const OpOptions& opts) {
  CheckDevice(in, "reducescatter");
  CheckDevice(out, "reducescatter");
  if (in.dtype != out.dtype || in.count != out.count * size_) {
    throw InvalidArgument(fmt::format(
        "reducescatter: in is {} but must hold one out ({}) per rank for {} ranks: {} {} "
        "elements",
        in.ToString(), out.ToString(), size_, out.count * size_, DTypeName(out.dtype)));
  }
  return Start(OpType::kReduceScatter, in, out, op, -1, opts);
}

void Communicator::CheckPeer(OpType type, const TensorView& buf, int peer,
                             const std::string& what) const {
  const bool send = type == OpType::kSend;
  CheckDevice(buf, what.c_str());
  CheckRank(peer, (what + (send ? ": destination" : ": source")).c_str());
  if (peer == rank_) {
    throw InvalidArgument(fmt::format("{}: a rank cannot {} itself; copy instead", what,
                                      send ? "send to" : "receive from"));
  }
}

WorkPtr Communicator::Send(TensorView buf, int dst, const OpOptions& opts) {
  CheckPeer(OpType::kSend, buf, dst, "send");
  return Start(OpType::kSend, buf, buf, ReduceOp::kSum, dst, opts);
}

WorkPtr Communicator::Recv(TensorView buf, int src, const OpOptions& opts) {
  CheckPeer(OpType::kRecv, buf, src, "recv");
  return Start(OpType::kRecv, buf, buf, ReduceOp::kSum, src, opts);
}

WorkPtr Communicator::Barrier(const OpOptions& opts) {
  return Start(OpType::kBarrier, TensorView(), TensorView(), ReduceOp::kSum, -1, opts);
}

int Communicator::GlobalRank(int r) const {
  CheckRank(r, "GlobalRank:");
  return config_.global_ranks.empty() ? r : config_.global_ranks[static_cast<size_t>(r)];
}

std::string Communicator::RankName(int r) const {
  if (config_.group.empty() || r < 0 || r >= size_) return fmt::format("rank {}", r);
  return fmt::format("rank {} of group {} (global rank {})", r, config_.group, GlobalRank(r));
}

std::vector<WorkPtr> Communicator::BatchSendRecv(const std::vector<P2POp>& ops,
                                                 const OpOptions& opts) {
  std::vector<Op> batch;
  batch.reserve(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const P2POp& p = ops[i];
    if (p.type != OpType::kSend && p.type != OpType::kRecv) {
      throw InvalidArgument(fmt::format(
          "batch op {}: {} is not point-to-point; a batch holds only sends and receives", i,
          OpTypeName(p.type)));
    }
    CheckPeer(p.type, p.buf, p.peer, fmt::format("batch op {}: {}", i, OpTypeName(p.type)));
    OpOptions o = opts;
    o.tag = p.tag;
    batch.push_back(MakeOp(p.type, p.buf, p.buf, ReduceOp::kSum, p.peer, o, /*in_batch=*/true));
  }
  std::lock_guard<std::mutex> lock(seq_mu_);
  if (broken_.load()) {
    std::vector<WorkPtr> works;
    for (Op& op : batch) {
      works.push_back(NewWork(std::move(op)));
      works.back()->Finish(BrokenError());
    }
    return works;
  }
  return SubmitBatch(std::move(batch));
}

std::vector<WorkPtr> Communicator::SubmitBatch(std::vector<Op> ops) {
  std::vector<WorkPtr> works;
  works.reserve(ops.size());
  for (Op& op : ops) works.push_back(Submit(std::move(op)));
  return works;
}

namespace {

// What each rank contributes to a Split: its color and key.
struct SplitEntry {
  int32_t color;
  int32_t key;
};

void CheckGroupName(const std::string& group) {
  for (char c : group) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      throw InvalidArgument(fmt::format(
          "split: group name '{}' has '{}'; use letters, digits, '-', '_' and '.'", group, c));
    }
  }
}

}  // namespace

std::unique_ptr<Communicator> Communicator::Split(int color, int key, const std::string& group) {
  if (color < kNoColor) {
    throw InvalidArgument(fmt::format(
        "split: color {} is negative; use a color >= 0, or kNoColor ({}) to join no group", color,
        kNoColor));
  }
  CheckGroupName(group);
  SplitEntry mine{color, key};
  std::vector<SplitEntry> all(static_cast<size_t>(size_));
  AllGather(TensorView(&mine, sizeof(mine), DType::kUInt8),
            TensorView(all.data(), sizeof(mine) * all.size(), DType::kUInt8))
      ->Wait();
  SplitInfo info;
  info.color = color;
  info.key = key;
  const int n = splits_++;
  if (color != kNoColor) {
    for (int r = 0; r < size_; ++r) {
      if (all[r].color == color) info.members.push_back(r);
    }
    std::stable_sort(info.members.begin(), info.members.end(),
                     [&](int a, int b) { return all[a].key < all[b].key; });
    CommConfig& c = info.config;
    c = config_;
    c.size = static_cast<int>(info.members.size());
    c.rank = static_cast<int>(std::find(info.members.begin(), info.members.end(), rank_) -
                              info.members.begin());
    c.name = fmt::format("{}/split-{}-c{}", config_.name, n, color);
    c.group = group.empty() ? std::to_string(color) : group;
    c.global_ranks.clear();
    for (int m : info.members) c.global_ranks.push_back(GlobalRank(m));
  }
  return CreateGroup(info);
}

std::unique_ptr<Communicator> Communicator::CreateGroup(const SplitInfo& info) {
  throw Unsupported(fmt::format("backend {} does not support split", Backend()));
}

Op Communicator::MakeOp(OpType type, TensorView in, TensorView out, ReduceOp reduce, int peer,
                        const OpOptions& opts, bool in_batch) const {
  Op op;
  op.type = type;
  op.in = in;
  op.out = out;
  op.reduce = reduce;
  op.peer = peer;
  op.timeout = opts.timeout.count() > 0 ? opts.timeout : config_.timeout;
  op.tag = opts.tag;
  op.in_batch = in_batch;
  Validate(op);
  return op;
}

WorkPtr Communicator::Start(OpType type, TensorView in, TensorView out, ReduceOp reduce, int peer,
                            const OpOptions& opts) {
  Op op = MakeOp(type, in, out, reduce, peer, opts);
  std::lock_guard<std::mutex> lock(seq_mu_);
  if (op.IsCollective()) op.seq = next_seq_++;
  if (broken_.load()) {
    auto work = NewWork(op);
    work->Finish(BrokenError());
    return work;
  }
  return Submit(std::move(op));
}

WorkPtr Communicator::NewWork(Op op) {
  return std::make_shared<Work>(std::move(op), [this](Work& w) { OnWaitTimeout(w); });
}

void Communicator::OpStarted(Work& work) {
  work.MarkStarted();
  if (health_ && work.op().seq) health_->Started(work.op().seq, OpTypeName(work.op().type));
}

void Communicator::OpFinished(Work& work, std::exception_ptr error) {
  if (!error && health_ && work.op().seq) health_->Completed(work.op().seq);
  const bool ok = !error;
  work.Finish(std::move(error));
  // Process-wide totals for metrics endpoints (op_counters.h): a few relaxed atomic adds.
  if (ok) {
    const Op& op = work.op();
    const size_t bytes = op.type == OpType::kRecv ? op.out.bytes() : op.in.bytes();
    OpCounters::Record(Backend(), op.type, bytes, work.Duration());
  }
}

std::exception_ptr Communicator::Blame(const Op& op, ErrorKind kind, const std::string& detail) {
  {
    std::lock_guard<std::mutex> lock(broken_mu_);
    if (broken_error_) return broken_error_;  // the first failure is the one worth reporting
  }
  std::string verdict;
  if (!op.IsCollective()) {
    verdict = fmt::format("check that {} posts the matching {} with tag {}", RankName(op.peer),
                          op.type == OpType::kSend ? "recv" : "send", op.tag);
  } else if (health_) {
    verdict = health_->Diagnose(op.seq, OpTypeName(op.type));
  } else if (size_ > 1) {
    verdict = "no store, so the stuck ranks cannot be named";
  }
  std::string what = fmt::format("{} {} on {}, {} ranks: {}", Backend(), op.Describe(),
                                 RankName(rank_), size_, detail);
  if (!verdict.empty()) what += "; " + verdict;
  std::exception_ptr error;
  try {
    ThrowError(kind, what);
  } catch (...) {
    error = std::current_exception();
  }
  std::lock_guard<std::mutex> lock(broken_mu_);
  if (!broken_error_) {
    broken_error_ = error;
    broken_what_ = what;
    broken_.store(true);
    COHORT_ERROR(kColl, "{}", what);
  }
  return broken_error_;
}

std::exception_ptr Communicator::BrokenError() const {
  std::lock_guard<std::mutex> lock(broken_mu_);
  try {
    throw PeerFailure(fmt::format("{} communicator is unusable after an earlier failure: {}",
                                  Backend(), broken_what_));
  } catch (...) {
    return std::current_exception();
  }
}

void Communicator::NotSupported(const Op& op, const std::string& why) const {
  throw Unsupported(fmt::format("backend {} does not support {}{}{}", Backend(),
                                OpTypeName(op.type), why.empty() ? "" : ": ", why));
}

void Communicator::OnWaitTimeout(Work& work) {
  const Op& op = work.op();
  work.Finish(Blame(op, ErrorKind::kTimeout,
                    fmt::format("timed out after {:.1f} s", op.timeout.count() / 1000.0)));
}

}  // namespace cohort::collectives
