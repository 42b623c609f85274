#include "collectives/ps/ps_communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "collectives/hier/hier_collectives.h"
#include "collectives/ps/ps_client.h"
#include "collectives/ps/ps_exchange.h"
#include "common/env.h"
#include "common/heap.h"
#include "common/log.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

PsServerClient::Deadline DeadlineAfter(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

char* Bytes(const TensorView& t, size_t element) {
  return static_cast<char*>(t.data) + element * ElementSize(t.dtype);
}

// Throws Internal when a server's answer has another size than the partition needs.
void CheckSize(const Exchange& ex, size_t want, const Op& op, size_t part) {
  if (ex.ResultSize(part) != want) {
    throw Internal(fmt::format("ps {} partition {}: the server answered {} bytes, expected {}",
                               op.Describe(), part, ex.ResultSize(part), want));
  }
}

}  // namespace

size_t PartitionElements(size_t count, size_t element_size, size_t partition_bytes,
                         size_t servers) {
  const size_t per = std::max<size_t>(1, partition_bytes / element_size);
  if (servers < 2 || count >= per * servers) return per;
  // Fewer partitions than servers: cut it into one piece per server, so that every server's
  // link and cores carry a share, but no piece smaller than kMinSplitBytes (small collectives
  // pay per call, not per byte).
  const size_t min_split = std::max<size_t>(1, kMinSplitBytes / element_size);
  const size_t even = (count + servers - 1) / servers;
  return std::min(per, std::max(even, min_split));
}

struct PsCommunicator::Attendance {
  grpc::ClientContext ctx;
  pb::AttendRequest req;
  pb::AttendReply reply;
};

PsOptions PsOptions::FromEnv() {
  PsOptions o;
  o.servers = SplitServerList(env::kPsServers.Str(""));
  const int64_t bytes = env::kPsPartitionBytes.Int(static_cast<int64_t>(o.partition_bytes));
  if (bytes < 8) {
    throw InvalidArgument(fmt::format(
        "COHORT_PS_PARTITION_BYTES={} is too small; use at least 8 (default 4194304)", bytes));
  }
  o.partition_bytes = static_cast<size_t>(bytes);
  o.token = env::kToken.Str("");
  return o;
}

std::string PsCommunicator::UnavailableReason(const CommConfig& config) {
  if (SplitServerList(env::kPsServers.Str("")).empty()) {
    return "ps needs its servers: set COHORT_PS_SERVERS=host:port,... (`cohort ps-server` on "
           "each), or run under `cohort launch --ps-servers N`";
  }
  return "";
}

PsCommunicator::PsCommunicator(const CommConfig& config)
    : PsCommunicator(config, PsOptions::FromEnv()) {}

PsCommunicator::PsCommunicator(const CommConfig& config, PsOptions options)
    : PsCommunicator(config, std::move(options), {}) {}

PsCommunicator::PsCommunicator(const CommConfig& config, PsOptions options,
                               std::vector<std::shared_ptr<PsServerClient>> servers)
    : ThreadedCommunicator(config), options_(std::move(options)), servers_(std::move(servers)) {
  if (servers_.empty()) {
    if (options_.servers.empty()) throw Unavailable(UnavailableReason(config));
    // Every collective allocates partition-sized messages (requests, answers): kept freed
    // memory turns their page faults into reuse (common/heap.h).
    if (env::kMallocTune.Bool(true) && !KeepFreedMemory()) {
      COHORT_WARN(kColl, "mallopt failed; large ps collectives may page-fault on every call");
    }
    const int n = static_cast<int>(options_.servers.size());
    for (int i = 0; i < n; ++i) {
      servers_.push_back(
          std::make_shared<PsServerClient>(options_.servers[i], i, n, options_.token));
    }
    const auto deadline = DeadlineAfter(config.connect_timeout);
    for (auto& s : servers_) s->Connect(deadline, config.connect_timeout);
    COHORT_DEBUG(kColl, "ps: rank {} of {} connected to {} servers", Rank(), Size(), n);
  }
  scope_ = Join(config.connect_timeout);
  StartAttendance();
  MakeHierarchy(config);
  StartWorker();
}

void PsCommunicator::MakeHierarchy(const CommConfig& config) {
  // The leaders' and the rails' communicators have one rank per host: nothing to group.
  if (config.group == HierCollectives::kLeadersGroup || Size() < 2) return;
  std::string why_not;
  hier_ = HierCollectives::Create(
      config, Scope(),
      [this](const CommConfig& c) {
        return std::unique_ptr<Communicator>(new PsCommunicator(c, options_, servers_));
      },
      &why_not);
  COHORT_DEBUG(
      kColl, "ps: {}",
      hier_ ? "hierarchical: " + hier_->Describe() : "every rank pushes its own (" + why_not + ")");
}

PsCommunicator::~PsCommunicator() {
  StopWorker();
  hier_.reset();  // its groups' attendance ends before this communicator's
  EndAttendance();
}

void PsCommunicator::StartAttendance() {
  {
    std::lock_guard<std::mutex> lock(attend_mu_);
    attending_ = servers_.size();
  }
  // Not under attend_mu_: gRPC may run a callback before Attend() returns.
  for (auto& server : servers_) {
    Attendance& a = attendance_.emplace_back();
    a.req.set_scope(scope_);
    a.req.set_rank(Rank());
    server->Attend(&a.ctx, &a.req, &a.reply, [this](grpc::Status) {
      std::lock_guard<std::mutex> lock(attend_mu_);
      --attending_;
      attend_cv_.notify_all();
    });
  }
}

void PsCommunicator::EndAttendance() {
  std::unique_lock<std::mutex> lock(attend_mu_);
  for (Attendance& a : attendance_) a.ctx.TryCancel();
  attend_cv_.wait(lock, [this] { return attending_ == 0; });
}

std::unique_ptr<Communicator> PsCommunicator::CreateGroup(const SplitInfo& info) {
  if (info.color == kNoColor) return nullptr;
  return std::unique_ptr<Communicator>(new PsCommunicator(info.config, options_, servers_));
}

void PsCommunicator::Validate(const Op& op) const {
  switch (op.type) {
    case OpType::kAllReduce:
    case OpType::kBroadcast:
    case OpType::kAllGather:
    case OpType::kBarrier:
      return;
    default:
      NotSupported(op);
  }
}

std::unique_ptr<ThreadedCommunicator::Pending> PsCommunicator::Run(const Op& op) {
  switch (op.type) {
    case OpType::kAllReduce:
      RunAllReduce(op);
      break;
    case OpType::kBroadcast:
      RunBroadcast(op);
      break;
    case OpType::kAllGather:
      RunAllGather(op);
      break;
    case OpType::kBarrier:
      RunBarrier(op);
      break;
    default:
      NotSupported(op);
  }
  return nullptr;
}

size_t PsCommunicator::AddPartitions(Exchange& ex, const Op& op, int kind,
                                     const TensorView& t) const {
  const size_t es = ElementSize(t.dtype);
  const size_t n = servers_.size();
  const size_t per = PartitionElements(t.count, es, options_.partition_bytes, n);
  const size_t parts = std::max<size_t>(1, (t.count + per - 1) / per);
  const bool sends = kind != pb::BROADCAST || op.peer == Rank();
  for (size_t p = 0; p < parts; ++p) {
    const size_t offset = p * per;
    const size_t count = std::min(per, t.count - std::min(t.count, offset));
    const bool data = sends && count > 0;
    pb::PushRequest& req = ex.Add(servers_[(op.seq + p) % n].get(),
                                  data ? Bytes(t, offset) : nullptr, data ? count * es : 0);
    req.set_scope(op.seq == 0 ? Scope() : scope_);
    req.set_seq(op.seq);
    req.set_part(static_cast<uint32_t>(p));
    req.set_rank(Rank());
    req.set_world(Size());
    req.set_kind(static_cast<pb::Kind>(kind));
    req.set_reduce(static_cast<int32_t>(op.reduce));
    req.set_dtype(static_cast<int32_t>(t.dtype));
    req.set_root(op.peer);
    req.set_total(t.count);
    req.set_count(count);
  }
  return per;
}

std::string PsCommunicator::Join(std::chrono::milliseconds timeout) {
  std::random_device rd;
  const uint64_t mine = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  Op op;
  op.type = OpType::kAllGather;
  op.seq = 0;
  op.in = TensorView(const_cast<uint64_t*>(&mine), sizeof(mine), DType::kUInt8);
  Exchange ex;
  AddPartitions(ex, op, pb::GATHER, op.in);
  ex.Run(DeadlineAfter(timeout));
  uint64_t epoch = 0;
  CheckSize(ex, sizeof(mine) * static_cast<size_t>(Size()), op, 0);
  ex.CopyResult(0, 0, sizeof(epoch), &epoch);
  return fmt::format("{}/{:016x}", Scope(), epoch);
}

void PsCommunicator::RunAllReduce(const Op& op) {
  if (hier_) {  // zero-length calls too: every call meets the host's other ranks
    hier_->AllReduce(op.in.data, op.out.data, op.in.count, op.in.dtype, op.reduce, op.timeout);
    return;
  }
  Exchange ex;
  const size_t per = AddPartitions(ex, op, pb::REDUCE, op.in);
  ex.Run(DeadlineAfter(op.timeout));
  const size_t es = ElementSize(op.in.dtype);
  for (size_t p = 0; p < ex.size(); ++p) {
    const size_t count = std::min(per, op.in.count - std::min(op.in.count, p * per));
    CheckSize(ex, count * es, op, p);
    if (count) ex.CopyResult(p, 0, count * es, Bytes(op.out, p * per));
  }
}

void PsCommunicator::RunBroadcast(const Op& op) {
  if (hier_) {
    hier_->Broadcast(op.out.data, op.out.count, op.out.dtype, op.peer, op.timeout);
    return;
  }
  Exchange ex;
  const size_t per = AddPartitions(ex, op, pb::BROADCAST, op.out);
  ex.Run(DeadlineAfter(op.timeout));
  if (op.peer == Rank()) return;
  const size_t es = ElementSize(op.out.dtype);
  for (size_t p = 0; p < ex.size(); ++p) {
    const size_t count = std::min(per, op.out.count - std::min(op.out.count, p * per));
    CheckSize(ex, count * es, op, p);
    if (count) ex.CopyResult(p, 0, count * es, Bytes(op.out, p * per));
  }
}

void PsCommunicator::RunAllGather(const Op& op) {
  if (hier_ && op.out.bytes() <= HierCollectives::kAllGatherMaxBytes) {
    hier_->AllGather(op.in.data, op.out.data, op.in.count, op.in.dtype, op.timeout);
    return;
  }
  Exchange ex;
  const size_t per = AddPartitions(ex, op, pb::GATHER, op.in);
  ex.Run(DeadlineAfter(op.timeout));
  const size_t es = ElementSize(op.in.dtype);
  const size_t n = op.in.count;
  for (size_t p = 0; p < ex.size(); ++p) {
    const size_t count = std::min(per, n - std::min(n, p * per));
    CheckSize(ex, count * es * static_cast<size_t>(Size()), op, p);
    if (count == 0) continue;
    for (int r = 0; r < Size(); ++r) {
      ex.CopyResult(p, static_cast<size_t>(r) * count * es, count * es,
                    Bytes(op.out, static_cast<size_t>(r) * n + p * per));
    }
  }
}

void PsCommunicator::RunBarrier(const Op& op) {
  Exchange ex;
  AddPartitions(ex, op, pb::BARRIER, TensorView(nullptr, 0, DType::kUInt8));
  ex.Run(DeadlineAfter(op.timeout));
}

}  // namespace cohort::collectives::ps
