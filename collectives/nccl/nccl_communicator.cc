#include "collectives/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <thread>
#include <tuple>
#include <vector>

#include "collectives/call_check.h"
#include "collectives/nccl/cuda_device.h"
#include "collectives/rendezvous.h"
#include "common/check_cuda.h"
#include "common/log.h"
#include "common/spin.h"

namespace cohort::collectives {
namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t NcclType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat64:
      return ncclFloat64;
    case DType::kFloat16:
      return ncclFloat16;
    case DType::kBFloat16:
      return ncclBfloat16;
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
    case DType::kUInt8:
      return ncclUint8;
  }
  throw Internal("nccl: unknown dtype");
}

// NCCL averages natively (ncclAvg), so no division pass is needed afterwards.
ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kProduct:
      return ncclProd;
  }
  throw Internal("nccl: unknown reduce op");
}

// Makes `device` the calling thread's current CUDA device for a scope and restores the previous
// one after, so that the caller's own device choice is left alone.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) {
      (void)cudaGetLastError();
      prev_ = -1;
    }
    if (prev_ == device) {
      prev_ = -1;
    } else {
      COHORT_CHECK_CUDA(cudaSetDevice(device));
    }
  }
  ~DeviceGuard() {
    if (prev_ >= 0) (void)cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// A call on a non-blocking communicator may return ncclInProgress: NCCL finishes it in the
// background, and the communicator must not be used again (nor its stream recorded on) before
// its state leaves ncclInProgress. Waits for that until deadline; throws on failure, and a
// Timeout that says `stuck` when the deadline passes.
void Settle(ncclComm_t comm, ncclResult_t rc, const char* call, Clock::time_point deadline,
            const char* stuck, const char* file, int line) {
  for (int n = 0; rc == ncclInProgress; ++n) {
    if (Clock::now() > deadline) {
      internal::FailCall(ErrorKind::kTimeout, call, file, line, stuck);
    }
    PollBackoff(n);
    ncclResult_t state = ncclInProgress;
    const ncclResult_t q = ncclCommGetAsyncError(comm, &state);
    rc = q == ncclSuccess ? state : q;
  }
  if (rc != ncclSuccess) {
    internal::FailCall(internal::KindFromNccl(rc), call, file, line, internal::NcclErrorString(rc));
  }
}

// For calls inside Enqueue(): needs comm_ and deadline in scope.
#define COHORT_NCCL_ENQUEUE(call)                                                       \
  Settle(comm_, (call), #call, deadline,                                                \
         "NCCL did not finish posting the operation in time (a peer that never posted " \
         "its side or never connected?)",                                               \
         __FILE__, __LINE__)

}  // namespace

std::string NcclCommunicator::UnavailableReason(const CommConfig& config) {
  std::string why;
  const int count = CudaDeviceCount(&why);
  if (count == 0) return why;
  if (config.size > 1 && !config.store) {
    return "nccl needs the rendezvous store to pass its unique id (set COHORT_STORE, or "
           "MASTER_ADDR and MASTER_PORT)";
  }
  const int local = LocalWorldSizeFromEnv();
  if (config.size > 1 && local > count) {
    return fmt::format(
        "{} workers run on this node but only {} GPU{} visible; NCCL needs one GPU per rank: "
        "start at most {} workers per node, or use gloo",
        local, count, count == 1 ? " is" : "s are", count);
  }
  return "";
}

NcclCommunicator::NcclCommunicator(const CommConfig& config)
    : NcclCommunicator(config, ChooseCudaDevice(config.rank)) {}

NcclCommunicator::NcclCommunicator(const CommConfig& config, int device)
    : Communicator(config), device_(device) {
  if (auto why = UnavailableReason(config); !why.empty()) throw Unavailable(why);
  const int count = CudaDeviceCount();
  if (device_ < 0 || device_ >= count) {
    throw InvalidArgument(
        fmt::format("nccl: CUDA device {} does not exist; this process sees {} "
                    "GPU{} (0..{})",
                    device_, count, count == 1 ? "" : "s", count - 1));
  }
  try {
    Init(config);
  } catch (...) {
    ReleaseResources();
    throw;
  }
  progress_ = std::thread([this] { ProgressLoop(); });
}

void NcclCommunicator::InitResources() {
  DeviceGuard guard(device_);
  COHORT_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  COHORT_CHECK_CUDA(cudaEventCreateWithFlags(&order_event_, cudaEventDisableTiming));
  COHORT_CHECK_CUDA(cudaMalloc(&barrier_buf_, sizeof(float)));
  COHORT_CHECK_CUDA(cudaMemsetAsync(barrier_buf_, 0, sizeof(float), stream_));
}

NcclCommunicator::NcclCommunicator(NcclCommunicator& parent, const SplitInfo& info)
    : Communicator(info.config), device_(parent.device_) {
  try {
    InitResources();
    DeviceGuard guard(device_);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    const std::string name = "cohort/" + info.config.name;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 19, 0)
    cfg.commName = name.c_str();
#endif
    const auto deadline = Clock::now() + info.config.connect_timeout;
    std::lock_guard<std::mutex> lock(parent.comm_mu_);
    const ncclResult_t rc = ncclCommSplit(parent.comm_, info.color, Rank(), &comm_, &cfg);
    Settle(comm_ ? comm_ : parent.comm_, rc, "ncclCommSplit", deadline,
           "ncclCommSplit did not finish in time (did every rank of the parent call Split?)",
           __FILE__, __LINE__);
  } catch (...) {
    if (comm_) (void)ncclCommAbort(comm_);
    comm_ = nullptr;
    ReleaseResources();
    throw;
  }
  progress_ = std::thread([this] { ProgressLoop(); });
}

std::unique_ptr<Communicator> NcclCommunicator::CreateGroup(const SplitInfo& info) {
  if (info.color != kNoColor) {
    return std::unique_ptr<Communicator>(new NcclCommunicator(*this, info));
  }
  // ncclCommSplit is collective over the parent: ranks that join no group take part too.
  DeviceGuard guard(device_);
  std::lock_guard<std::mutex> lock(comm_mu_);
  ncclComm_t none = nullptr;
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  const ncclResult_t rc = ncclCommSplit(comm_, NCCL_SPLIT_NOCOLOR, Rank(), &none, &cfg);
  Settle(comm_, rc, "ncclCommSplit", Clock::now() + config().connect_timeout,
         "ncclCommSplit did not finish in time (did every rank of the parent call Split?)",
         __FILE__, __LINE__);
  return nullptr;
}

std::vector<WorkPtr> NcclCommunicator::SubmitBatch(std::vector<Op> ops) {
  std::vector<WorkPtr> works;
  for (Op& op : ops) works.push_back(NewWork(std::move(op)));
  if (works.empty()) return works;
  const auto deadline = Clock::now() + works.front()->op().timeout;
  std::lock_guard<std::mutex> lock(comm_mu_);
  if (aborted_.load() || comm_ == nullptr) {
    for (auto& w : works) w->Finish(BrokenError());
    return works;
  }
  try {
    DeviceGuard guard(device_);
    // NCCL matches one peer's messages in posting order: posting each peer's sends, and its
    // receives, by tag makes a batch match by tag whatever order the two sides listed them in.
    std::vector<size_t> order(works.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&works](size_t a, size_t b) {
      const Op &x = works[a]->op(), &y = works[b]->op();
      return std::tie(x.peer, x.tag) < std::tie(y.peer, y.tag);
    });
    COHORT_NCCL_ENQUEUE(ncclGroupStart());
    for (size_t i : order) {
      OpStarted(*works[i]);
      Enqueue(works[i]->op(), deadline);
    }
    COHORT_NCCL_ENQUEUE(ncclGroupEnd());
    for (auto& w : works) Track(w);
  } catch (const std::exception& e) {
    auto* ce = dynamic_cast<const cohort::Error*>(&e);
    std::exception_ptr error =
        Blame(works.front()->op(), ce ? ce->kind() : ErrorKind::kInternal, e.what());
    Abort(e.what());
    for (auto& w : works) OpFinished(*w, error);
    return works;
  }
  cv_.notify_one();
  return works;
}

void NcclCommunicator::Track(const WorkPtr& work) {
  cudaEvent_t done = TakeEvent();
  try {
    COHORT_CHECK_CUDA(cudaEventRecord(done, stream_));
  } catch (...) {
    std::lock_guard<std::mutex> qlock(mu_);
    free_events_.push_back(done);
    throw;
  }
  std::lock_guard<std::mutex> qlock(mu_);
  pending_.push_back({work, done, Clock::now()});
}

void NcclCommunicator::Init(const CommConfig& config) {
  InitResources();
  DeviceGuard guard(device_);

  const auto deadline = Clock::now() + config.connect_timeout;
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (Size() > 1) {
    JoinGroup(*config.store, Scope(), Rank(), Size(), config.connect_timeout, "nccl");
    const std::string key = Scope() + "/nccl/id";
    if (Rank() == 0) {
      COHORT_CHECK_NCCL(ncclGetUniqueId(&id));
      config.store->Set(key, std::string(id.internal, sizeof(id.internal)));
    } else {
      const auto left =
          std::max(std::chrono::milliseconds(1),
                   std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
      const std::string value = config.store->Get(key, left);
      if (value.size() != sizeof(id.internal)) {
        throw DataLoss(
            fmt::format("nccl: the unique id under '{}' has {} bytes instead of {}; "
                        "is another program using the same store keys?",
                        key, value.size(), sizeof(id.internal)));
      }
      std::memcpy(id.internal, value.data(), value.size());
    }
  } else {
    COHORT_CHECK_NCCL(ncclGetUniqueId(&id));
  }

  // Non-blocking, so that creation is bounded by connect_timeout (and aborted past it) instead
  // of hanging on a rank that never arrives.
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  const std::string name = "cohort/" + config.name;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 19, 0)
  cfg.commName = name.c_str();
#endif
  try {
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, Size(), id, Rank(), &cfg);
    Settle(comm_, rc, "ncclCommInitRankConfig", deadline,
           fmt::format("rank {} of {} could not create its NCCL communicator on cuda:{} within "
                       "{:.1f} s; check that every rank reached this point and that the nodes "
                       "reach each other (NCCL_SOCKET_IFNAME, NCCL_DEBUG=WARN)",
                       Rank(), Size(), device_, config.connect_timeout.count() / 1000.0)
               .c_str(),
           __FILE__, __LINE__);
  } catch (...) {
    if (comm_) {
      (void)ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    throw;
  }
  int version = 0;
  (void)ncclGetVersion(&version);
  COHORT_DEBUG(kNccl, "rank {} of {} ready on cuda:{} (NCCL {})", Rank(), Size(), device_, version);
}

NcclCommunicator::~NcclCommunicator() {
  try {
    {
      // The progress thread finishes every pending operation, at the latest when it times out.
      std::unique_lock<std::mutex> lock(mu_);
      idle_cv_.wait(lock, [this] { return pending_.empty(); });
      stop_ = true;
    }
    cv_.notify_all();
    if (progress_.joinable()) progress_.join();

    std::lock_guard<std::mutex> lock(comm_mu_);
    if (comm_) {
      DeviceGuard guard(device_);
      ncclResult_t rc = ncclCommFinalize(comm_);
      const auto deadline = Clock::now() + config().connect_timeout;
      for (int n = 0; rc == ncclInProgress && Clock::now() < deadline; ++n) {
        PollBackoff(n);
        ncclResult_t state = ncclInProgress;
        const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
        rc = q == ncclSuccess ? state : q;
      }
      if (rc == ncclSuccess) {
        rc = ncclCommDestroy(comm_);
      } else {
        COHORT_WARN(kNccl, "ncclCommFinalize did not complete ({}); aborting the communicator",
                    rc == ncclInProgress ? "timed out" : internal::NcclErrorString(rc));
        rc = ncclCommAbort(comm_);
      }
      if (rc != ncclSuccess) {
        COHORT_WARN(kNccl, "releasing the NCCL communicator failed: {}",
                    internal::NcclErrorString(rc));
      }
      comm_ = nullptr;
    }
  } catch (const std::exception& e) {
    COHORT_ERROR(kNccl, "closing the NCCL communicator: {}", e.what());
  }
  ReleaseResources();
}

void NcclCommunicator::ReleaseResources() noexcept {
  int prev = -1;
  const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != device_ && device_ >= 0 &&
                        cudaSetDevice(device_) == cudaSuccess;
  for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
  free_events_.clear();
  for (const Pending& p : pending_) (void)cudaEventDestroy(p.done);
  pending_.clear();
  if (order_event_) (void)cudaEventDestroy(order_event_);
  order_event_ = nullptr;
  if (barrier_buf_) (void)cudaFree(barrier_buf_);
  barrier_buf_ = nullptr;
  if (debug_buf_) (void)cudaFree(debug_buf_);
  debug_buf_ = nullptr;
  if (stream_) (void)cudaStreamDestroy(stream_);
  stream_ = nullptr;
  (void)cudaGetLastError();
  if (switched) (void)cudaSetDevice(prev);
}

void NcclCommunicator::CheckTensor(const TensorView& t, const Op& op) const {
  if (t.count == 0) return;
  const char* what = OpTypeName(op.type);
  if (t.device.index != device_) {
    throw InvalidArgument(fmt::format(
        "nccl {}: {} is on {} but this communicator runs on cuda:{}; move the tensor to "
        "cuda:{}, or create the communicator for device {}",
        what, t.ToString(), t.device.ToString(), device_, device_, t.device.index));
  }
  cudaPointerAttributes attr;
  std::memset(&attr, 0, sizeof(attr));
  const cudaError_t rc = cudaPointerGetAttributes(&attr, t.data);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    throw InvalidArgument(fmt::format("nccl {}: {} does not point to CUDA memory ({})", what,
                                      t.ToString(), internal::CudaErrorString(rc)));
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    throw InvalidArgument(fmt::format(
        "nccl {}: {} points to {} memory, not GPU memory; allocate it on cuda:{} (cudaMalloc, "
        "or a CUDA tensor), or use a CPU backend",
        what, t.ToString(), attr.type == cudaMemoryTypeHost ? "pinned host" : "host", device_));
  }
  if (attr.type == cudaMemoryTypeDevice && attr.device != device_) {
    throw InvalidArgument(fmt::format(
        "nccl {}: {} says cuda:{} but its memory is on cuda:{}; fix the tensor's device index",
        what, t.ToString(), t.device.index, attr.device));
  }
}

void NcclCommunicator::Validate(const Op& op) const {
  if ((op.type == OpType::kSend || op.type == OpType::kRecv) && op.tag != 0 && !op.in_batch) {
    throw InvalidArgument(fmt::format(
        "nccl {} {} rank {} with tag {}: NCCL matches separate sends and receives in call order, "
        "not by tag; pass tag 0 and the same order on both ranks, or use BatchSendRecv",
        OpTypeName(op.type), op.type == OpType::kSend ? "to" : "from", op.peer, op.tag));
  }
  CheckTensor(op.in, op);
  if (op.out.data != op.in.data) CheckTensor(op.out, op);
}

WorkPtr NcclCommunicator::Submit(Op op) {
  auto work = NewWork(std::move(op));
  const Op& o = work->op();
  const auto deadline = Clock::now() + o.timeout;
  bool failed = false;
  ErrorKind kind = ErrorKind::kInternal;
  std::string detail;
  {
    std::lock_guard<std::mutex> lock(comm_mu_);
    if (aborted_.load() || comm_ == nullptr) {
      work->Finish(BrokenError());
      return work;
    }
    cudaEvent_t done = nullptr;
    try {
      DeviceGuard guard(device_);
      OpStarted(*work);
      if (config().debug_checks && o.IsCollective() && Size() > 1) CheckSameCall(o, deadline);
      Enqueue(o, deadline);
      done = TakeEvent();
      COHORT_CHECK_CUDA(cudaEventRecord(done, stream_));
      std::lock_guard<std::mutex> qlock(mu_);
      pending_.push_back({work, done, Clock::now()});
    } catch (const std::exception& e) {
      if (done) {
        std::lock_guard<std::mutex> qlock(mu_);
        free_events_.push_back(done);
      }
      failed = true;
      auto* ce = dynamic_cast<const cohort::Error*>(&e);
      kind = ce ? ce->kind() : ErrorKind::kInternal;
      detail = e.what();
    }
  }
  if (failed) {
    // The other ranks posted their side: the group is out of step, and stops here.
    std::exception_ptr error = Blame(o, kind, detail);
    Abort(detail);
    OpFinished(*work, error);
    return work;
  }
  cv_.notify_one();
  return work;
}

void NcclCommunicator::CheckSameCall(const Op& op, Clock::time_point deadline) {
  const size_t bytes = sizeof(CallSignature);
  if (!debug_buf_) COHORT_CHECK_CUDA(cudaMalloc(&debug_buf_, bytes * Size()));
  std::vector<CallSignature> all(Size());
  all[Rank()] = SignatureOf(op);
  char* slots = static_cast<char*>(debug_buf_);
  COHORT_CHECK_CUDA(cudaMemcpyAsync(slots + bytes * Rank(), &all[Rank()], bytes,
                                    cudaMemcpyHostToDevice, stream_));
  COHORT_NCCL_ENQUEUE(
      ncclAllGather(slots + bytes * Rank(), slots, bytes, ncclUint8, comm_, stream_));
  COHORT_CHECK_CUDA(
      cudaMemcpyAsync(all.data(), slots, bytes * Size(), cudaMemcpyDeviceToHost, stream_));
  // Polled, not cudaStreamSynchronize: a rank that never calls must end in a Timeout naming
  // the check, after which Submit aborts the communicator and the stream drains.
  for (;;) {
    const cudaError_t done = cudaStreamQuery(stream_);
    if (done == cudaSuccess) break;
    if (done != cudaErrorNotReady) COHORT_CHECK_CUDA(done);
    if (Clock::now() >= deadline) {
      throw Timeout(fmt::format("COHORT_DEBUG_COLLECTIVES: the other ranks did not reach {} "
                                "in time (a rank that skipped it, or called another op?)",
                                op.Describe()));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  collectives::CheckSameCall(all.data(), Size(), Rank());
}

void NcclCommunicator::Enqueue(const Op& op, Clock::time_point deadline) {
  // Run after the caller's GPU work: a record on the legacy default stream waits for every
  // blocking stream, and stream_ waits for that record, on the GPU only.
  COHORT_CHECK_CUDA(cudaEventRecord(order_event_, cudaStreamLegacy));
  COHORT_CHECK_CUDA(cudaStreamWaitEvent(stream_, order_event_, 0));
  // Zero elements: nothing moves on any rank (counts match across ranks), but the operation
  // still completes in stream order.
  switch (op.type) {
    case OpType::kAllReduce:
      if (op.in.count == 0) return;
      COHORT_NCCL_ENQUEUE(ncclAllReduce(op.in.data, op.out.data, op.in.count, NcclType(op.in.dtype),
                                        NcclOp(op.reduce), comm_, stream_));
      return;
    case OpType::kBroadcast:
      if (op.out.count == 0) return;
      COHORT_NCCL_ENQUEUE(ncclBroadcast(op.out.data, op.out.data, op.out.count,
                                        NcclType(op.out.dtype), op.peer, comm_, stream_));
      return;
    case OpType::kAllGather:
      // In place exactly when in is this rank's slice of out: nccl-tests' convention too.
      if (op.in.count == 0) return;
      COHORT_NCCL_ENQUEUE(ncclAllGather(op.in.data, op.out.data, op.in.count, NcclType(op.in.dtype),
                                        comm_, stream_));
      return;
    case OpType::kReduceScatter:
      if (op.out.count == 0) return;
      COHORT_NCCL_ENQUEUE(ncclReduceScatter(op.in.data, op.out.data, op.out.count,
                                            NcclType(op.in.dtype), NcclOp(op.reduce), comm_,
                                            stream_));
      return;
    case OpType::kSend:
      if (op.in.count == 0) return;
      COHORT_NCCL_ENQUEUE(
          ncclSend(op.in.data, op.in.count, NcclType(op.in.dtype), op.peer, comm_, stream_));
      return;
    case OpType::kRecv:
      if (op.out.count == 0) return;
      COHORT_NCCL_ENQUEUE(
          ncclRecv(op.out.data, op.out.count, NcclType(op.out.dtype), op.peer, comm_, stream_));
      return;
    case OpType::kBarrier:
      COHORT_NCCL_ENQUEUE(
          ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclFloat32, ncclSum, comm_, stream_));
      return;
  }
}

cudaEvent_t NcclCommunicator::TakeEvent() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
  }
  cudaEvent_t e = nullptr;
  COHORT_CHECK_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

#undef COHORT_NCCL_ENQUEUE

}  // namespace cohort::collectives
