#include "collectives/gloo/gloo_communicator.h"

#include <fmt/format.h>
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "collectives/gloo/gloo_store_adapter.h"
#include "collectives/hier/hier_collectives.h"
#include "collectives/reduce.h"
#include "collectives/rendezvous.h"
#include "collectives/shm/shm_collectives.h"
#include "collectives/sigpipe.h"
#include "common/env.h"
#include "common/log.h"
#include "common/net.h"

namespace cohort::collectives {
namespace {

// Slot prefixes of our own algorithms; Gloo's use 0x01..0x08.
constexpr uint8_t kSendRecvSlotPrefix = 0x40;
constexpr uint8_t kReduceScatterSlotPrefix = 0x41;
// Segment size of the reduce-scatter pipeline: large enough to amortize per-message costs,
// small enough that reducing one segment overlaps receiving the next.
constexpr size_t kSegmentBytes = 512 * 1024;

// Gloo's typed setters only use sizeof(T); pick a type of the element's size.
template <typename F>
void WithElementType(DType dtype, F&& f) {
  switch (ElementSize(dtype)) {
    case 1:
      f(static_cast<uint8_t*>(nullptr));
      return;
    case 2:
      f(static_cast<uint16_t*>(nullptr));
      return;
    case 4:
      f(static_cast<uint32_t*>(nullptr));
      return;
    case 8:
      f(static_cast<uint64_t*>(nullptr));
      return;
  }
  throw Internal("gloo: unexpected element size");
}

}  // namespace

std::string GlooCommunicator::BindHost() {
  if (auto h = env::kGlooHost.Get()) return *h;
  std::string store = env::kStore.Str(env::kMasterAddr.Str("127.0.0.1:0"));
  std::string host = store.substr(0, store.rfind(':'));
  if (host.empty() || net::IsLoopback(host)) return "127.0.0.1";
  return net::Hostname();
}

std::string GlooCommunicator::UnavailableReason(const CommConfig& config) {
  if (!config.store && config.size > 1) {
    return "gloo needs the rendezvous store (set COHORT_STORE, or MASTER_ADDR and MASTER_PORT)";
  }
  return "";
}

GlooCommunicator::GlooCommunicator(const CommConfig& config)
    : GlooCommunicator(config, nullptr) {}

GlooCommunicator::GlooCommunicator(const CommConfig& config,
                                   std::shared_ptr<gloo::transport::Device> device)
    : ThreadedCommunicator(config), device_(std::move(device)) {
  if (auto why = UnavailableReason(config); !why.empty()) throw Unavailable(why);
  if (Size() > 1) {
    // Gloo's TCP pairs write with writev(2): without this a peer's death is our SIGPIPE.
    IgnoreSigpipe();
    const std::string host = BindHost();
    JoinGroup(*config.store, Scope(), Rank(), Size(), config.connect_timeout, "gloo");
    try {
      if (!device_) {
        gloo::transport::tcp::attr attr;
        attr.hostname = host;
        if (host.find(':') == std::string::npos) attr.ai_family = AF_INET;
        device_ = gloo::transport::tcp::CreateDevice(attr);
      }
      auto context = std::make_shared<gloo::rendezvous::Context>(Rank(), Size());
      context->setTimeout(config.connect_timeout);
      GlooStoreAdapter adapter(config.store, Scope() + "/gloo/", config.connect_timeout);
      context->connectFullMesh(adapter, device_);
      context->setTimeout(config.timeout);
      context_ = context;
    } catch (const cohort::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Unavailable(
          fmt::format("gloo: rank {} could not connect to its peers over TCP on {} "
                      "({}); set COHORT_GLOO_HOST to an address the other nodes "
                      "can reach",
                      Rank(), host, e.what()));
    }
    COHORT_DEBUG(kGloo, "connected {} ranks over TCP on {}", Size(), host);
    std::string why_not;
    if (config.group == HierCollectives::kLeadersGroup) {
      // One leader per host: no shared memory to find (on one machine, with COHORT_HIER_HOST's
      // test hosts, it would be found, and the leaders' step would not go over TCP).
      COHORT_DEBUG(kGloo, "the hosts' leaders of a hierarchical all-reduce: over TCP");
    } else if ((shm_ = ShmCollectives::Create(*config.store, Scope(), Rank(), Size(),
                                              config.connect_timeout, &why_not))) {
      COHORT_DEBUG(kGloo,
                   "all {} ranks share this host: broadcast, all-gather, reduce-scatter and "
                   "all-reduce through shared memory",
                   Size());
    } else {
      std::string flat_why;
      hier_ = HierCollectives::Create(
          config, Scope(),
          [this](const CommConfig& c) { return std::make_unique<GlooCommunicator>(c, device_); },
          &flat_why);
      COHORT_DEBUG(kGloo, "all-reduce {} (no shared memory: {}{})",
                   hier_ ? "hierarchical: " + hier_->Describe() : "over TCP", why_not,
                   hier_ ? "" : "; not hierarchical: " + flat_why);
    }
    waiter_ = std::thread([this] { WaitPosted(); });
  }
  StartWorker();
}

GlooCommunicator::~GlooCommunicator() {
  StopWorker();
  StopWaiter();
}

std::unique_ptr<Communicator> GlooCommunicator::CreateGroup(const SplitInfo& info) {
  if (info.color == kNoColor) return nullptr;
  return std::make_unique<GlooCommunicator>(info.config, device_);
}

WorkPtr GlooCommunicator::Submit(Op op) {
  if (op.IsCollective()) return ThreadedCommunicator::Submit(std::move(op));
  auto work = NewWork(std::move(op));
  const Op& o = work->op();
  OpStarted(*work);
  const TensorView& buf = o.type == OpType::kSend ? o.in : o.out;
  if (buf.count == 0) {
    OpFinished(*work, nullptr);
    return work;
  }
  Posted p{work, nullptr};
  try {
    p.buf = context_->createUnboundBuffer(buf.data, buf.bytes());
    const uint64_t slot = gloo::Slot::build(kSendRecvSlotPrefix, o.tag);
    if (o.type == OpType::kSend) {
      p.buf->send(o.peer, slot);
    } else {
      p.buf->recv(o.peer, slot);
    }
  } catch (const std::exception& e) {
    OpFinished(*work, Blame(o, Classify(e), e.what()));
    return work;
  }
  {
    std::lock_guard<std::mutex> lock(p2p_mu_);
    posted_.push_back(std::move(p));
  }
  p2p_cv_.notify_one();
  return work;
}

void GlooCommunicator::WaitPosted() {
  std::unique_lock<std::mutex> lock(p2p_mu_);
  for (;;) {
    p2p_cv_.wait(lock, [this] { return p2p_stop_ || !posted_.empty(); });
    if (posted_.empty()) return;
    Posted p = std::move(posted_.front());
    posted_.pop_front();
    const Op& o = p.work->op();
    if (p2p_stop_) {
      p.work->Finish(std::make_exception_ptr(Unavailable(fmt::format(
          "gloo {}: the communicator was destroyed while it was pending", o.Describe()))));
      continue;
    }
    waiting_on_ = p.buf.get();
    waiting_on_recv_ = o.type == OpType::kRecv;
    lock.unlock();
    std::exception_ptr error;
    try {
      const bool ok = waiting_on_recv_ ? p.buf->waitRecv(o.timeout) : p.buf->waitSend(o.timeout);
      if (!ok) {
        error = std::make_exception_ptr(Unavailable(fmt::format(
            "gloo {}: the communicator was destroyed while it was pending", o.Describe())));
      }
    } catch (const std::exception& e) {
      error = Blame(o, Classify(e), e.what());
    }
    OpFinished(*p.work, error);
    lock.lock();
    waiting_on_ = nullptr;
  }
}

void GlooCommunicator::StopWaiter() {
  {
    std::lock_guard<std::mutex> lock(p2p_mu_);
    p2p_stop_ = true;
    if (waiting_on_) {
      if (waiting_on_recv_) {
        waiting_on_->abortWaitRecv();
      } else {
        waiting_on_->abortWaitSend();
      }
    }
  }
  p2p_cv_.notify_all();
  if (waiter_.joinable()) waiter_.join();
}

ErrorKind GlooCommunicator::Classify(const std::exception& e) const {
  if (auto* ce = dynamic_cast<const cohort::Error*>(&e)) return ce->kind();
  std::string what = e.what();
  if (what.find("Timed out") != std::string::npos) return ErrorKind::kTimeout;
  if (dynamic_cast<const gloo::EnforceNotMet*>(&e)) return ErrorKind::kInvalidArgument;
  return ErrorKind::kPeerFailure;
}

char* GlooCommunicator::Scratch(size_t bytes) {
  if (scratch_.size() < bytes) scratch_.resize(bytes);
  return scratch_.data();
}

std::unique_ptr<ThreadedCommunicator::Pending> GlooCommunicator::Run(const Op& op) {
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
    case OpType::kReduceScatter:
      RunReduceScatter(op);
      break;
    case OpType::kBarrier:
      RunBarrier(op);
      break;
    case OpType::kSend:
    case OpType::kRecv:
      throw Internal("gloo: send/recv must be posted by Submit()");
  }
  return nullptr;
}

void GlooCommunicator::RunAllReduce(const Op& op) {
  const size_t n = op.in.count;
  if (shm_) {  // zero-length calls too: they meet the other ranks, which checks the sizes agree
    shm_->AllReduce(op.in.data, op.out.data, n, op.in.dtype, op.reduce, op.timeout);
    return;
  }
  if (hier_) {  // zero-length calls too, as shm_
    hier_->AllReduce(op.in.data, op.out.data, n, op.in.dtype, op.reduce, op.timeout);
    return;
  }
  if (Size() == 1 || n == 0) {
    if (!op.InPlace()) std::memcpy(op.out.data, op.in.data, op.in.bytes());
    return;
  }
  gloo::AllreduceOptions opts(context_);
  WithElementType(op.in.dtype, [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    if (!op.InPlace()) opts.setInput(static_cast<T*>(op.in.data), n);
    opts.setOutput(static_cast<T*>(op.out.data), n);
  });
  opts.setReduceFunction(GetReduceFn(op.reduce, op.in.dtype));
  opts.setTag(static_cast<uint32_t>(op.seq));
  opts.setTimeout(op.timeout);
  gloo::allreduce(opts);
  if (op.reduce == ReduceOp::kAvg) FinishAverage(op.out.dtype, op.out.data, n, Size());
}

void GlooCommunicator::RunBroadcast(const Op& op) {
  if (shm_) {  // zero-length calls too, as all-reduce
    shm_->Broadcast(op.out.data, op.out.count, op.out.dtype, op.peer, op.timeout);
    return;
  }
  if (hier_) {  // zero-length calls too, as shm_
    hier_->Broadcast(op.out.data, op.out.count, op.out.dtype, op.peer, op.timeout);
    return;
  }
  if (Size() == 1 || op.out.count == 0) return;
  gloo::BroadcastOptions opts(context_);
  WithElementType(op.out.dtype, [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    opts.setOutput(static_cast<T*>(op.out.data), op.out.count);
  });
  opts.setRoot(op.peer);
  opts.setTag(static_cast<uint32_t>(op.seq));
  opts.setTimeout(op.timeout);
  gloo::broadcast(opts);
}

void GlooCommunicator::RunAllGather(const Op& op) {
  const size_t n = op.in.count;
  const bool in_place =
      static_cast<char*>(op.out.data) + Rank() * op.in.bytes() == static_cast<char*>(op.in.data);
  if (shm_) {
    shm_->AllGather(op.in.data, op.out.data, n, op.in.dtype, op.timeout);
    return;
  }
  if (hier_ && op.out.bytes() <= HierCollectives::kAllGatherMaxBytes) {
    hier_->AllGather(op.in.data, op.out.data, n, op.in.dtype, op.timeout);
    return;
  }
  if (Size() == 1 || n == 0) {
    if (!in_place && n) std::memcpy(op.out.data, op.in.data, op.in.bytes());
    return;
  }
  gloo::AllgatherOptions opts(context_);
  WithElementType(op.in.dtype, [&](auto* type) {
    using T = std::remove_pointer_t<decltype(type)>;
    // Without an input Gloo gathers in place: this rank's slice of out is its contribution.
    if (!in_place) opts.setInput(static_cast<T*>(op.in.data), n);
    opts.setOutput(static_cast<T*>(op.out.data), n * Size());
  });
  opts.setTag(static_cast<uint32_t>(op.seq));
  opts.setTimeout(op.timeout);
  gloo::allgather(opts);
}

// Ring reduce-scatter (Gloo's new API has none): in step s rank r sends its partial sum of chunk
// r-s-1 to the right and adds the left neighbour's partial of chunk r-s-2 to its own input; after
// size-1 steps it holds the full reduction of chunk r. Segments pipeline receiving and reducing.
void GlooCommunicator::RunReduceScatter(const Op& op) {
  const int size = Size(), r = Rank();
  const size_t n = op.out.count, es = ElementSize(op.in.dtype), chunk = n * es;
  char* in = static_cast<char*>(op.in.data);
  char* out = static_cast<char*>(op.out.data);
  if (shm_) {
    shm_->ReduceScatter(in, out, n, op.in.dtype, op.reduce, op.timeout);
    return;
  }
  // Zero-length calls too, as shm_; the size is every rank's (checked before numbering).
  if (hier_ && (hier_->rails() || op.in.bytes() <= HierCollectives::kReduceScatterMaxBytes)) {
    hier_->ReduceScatter(in, out, n, op.in.dtype, op.reduce, op.timeout);
    return;
  }
  if (n == 0) return;
  if (size == 1) {
    if (out != in) std::memcpy(out, in, chunk);
    return;
  }
  const ReduceFn reduce = GetReduceFn(op.reduce, op.in.dtype);
  const size_t seg = std::max<size_t>(es, kSegmentBytes / es * es);
  const size_t nseg = (chunk + seg - 1) / seg;
  char* acc[2] = {Scratch(3 * chunk), nullptr};
  acc[1] = acc[0] + chunk;
  char* recv = acc[1] + chunk;
  auto uin = context_->createUnboundBuffer(in, op.in.bytes());
  std::unique_ptr<gloo::transport::UnboundBuffer> uacc[2] = {
      context_->createUnboundBuffer(acc[0], chunk), context_->createUnboundBuffer(acc[1], chunk)};
  auto urecv = context_->createUnboundBuffer(recv, chunk);
  const int right = (r + 1) % size, left = (r + size - 1) % size;
  const uint64_t slot = gloo::Slot::build(kReduceScatterSlotPrefix, static_cast<uint32_t>(op.seq));
  const auto deadline = std::chrono::steady_clock::now() + op.timeout;
  auto remaining = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now()));
  };
  auto check = [&](bool ok, const char* what) {
    if (!ok) throw Timeout(fmt::format("timed out waiting for the {} rank", what));
  };
  for (int s = 0; s < size - 1; ++s) {
    const size_t send_idx = (r - s - 1 + 2 * size) % size;
    const size_t recv_idx = (r - s - 2 + 2 * size) % size;
    gloo::transport::UnboundBuffer* src = s == 0 ? uin.get() : uacc[(s + 1) % 2].get();
    const size_t src_off = s == 0 ? send_idx * chunk : 0;
    char* dst = s == size - 2 ? out : acc[s % 2];
    for (size_t k = 0; k < nseg; ++k) {
      urecv->recv(left, slot, k * seg, std::min(seg, chunk - k * seg));
    }
    for (size_t k = 0; k < nseg; ++k) {
      src->send(right, slot, src_off + k * seg, std::min(seg, chunk - k * seg));
    }
    const char* mine = in + recv_idx * chunk;
    for (size_t k = 0; k < nseg; ++k) {
      check(urecv->waitRecv(remaining()), "left");
      const size_t len = std::min(seg, chunk - k * seg);
      reduce(dst + k * seg, recv + k * seg, mine + k * seg, len / es);
    }
    for (size_t k = 0; k < nseg; ++k) check(src->waitSend(remaining()), "right");
  }
  if (op.reduce == ReduceOp::kAvg) FinishAverage(op.out.dtype, out, n, size);
}

void GlooCommunicator::RunBarrier(const Op& op) {
  if (Size() == 1) return;
  gloo::BarrierOptions opts(context_);
  opts.setTag(static_cast<uint32_t>(op.seq));
  opts.setTimeout(op.timeout);
  gloo::barrier(opts);
}

}  // namespace cohort::collectives
