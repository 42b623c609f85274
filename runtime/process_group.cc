#include "runtime/process_group.h"

#include <ATen/core/Tensor.h>
#include <fmt/format.h>

#include <sstream>

#include "collectives/registry.h"
#include "collectives/store/memory_store.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/error.h"
#include "common/heap.h"
#include "common/log.h"
#include "common/world.h"

namespace cohort::runtime {
namespace {

using collectives::DType;

// "[2, 3]": torch prints sizes this way too, so the message matches what the user sees.
std::string ShapeString(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

std::string Describe(const at::Tensor& t) {
  std::ostringstream s;
  s << t.scalar_type() << " " << ShapeString(t) << " on " << t.device();
  return s.str();
}

DType ToDType(const at::Tensor& t, const std::string& what) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kInt:
      return DType::kInt32;
    case at::kLong:
      return DType::kInt64;
    case at::kByte:
      return DType::kUInt8;
    default:
      break;
  }
  // Bool is common (masks): say what to convert to, not only what is missing.
  throw InvalidArgument(fmt::format(
      "{} ({}) has a dtype collectives cannot move (supported: float32, float64, float16, "
      "bfloat16, int32, int64, uint8); convert it first, e.g. .to(torch::kUInt8) for bool or "
      ".to(torch::kFloat) for other types",
      what, Describe(t)));
}

collectives::Device ToDevice(const at::Tensor& t, const std::string& what) {
  const c10::Device d = t.device();
  if (d.is_cpu()) return {};
  if (d.is_cuda()) return {collectives::DeviceType::kCUDA, d.index()};
  throw InvalidArgument(
      fmt::format("{} ({}) is on a device collectives cannot reach; they move CPU and CUDA "
                  "tensors only: copy it with .to(torch::kCPU)",
                  what, Describe(t)));
}

// True when the environment names a store (set by the launcher, or torchrun's MASTER_*).
bool StoreConfigured() {
  return env::kStore.IsSet() || env::kMasterAddr.IsSet() || env::kMasterPort.IsSet();
}

}  // namespace

collectives::TensorView View(const at::Tensor& t, const std::string& what) {
  if (!t.defined()) {
    throw InvalidArgument(fmt::format(
        "{} is an undefined tensor (a default-constructed torch::Tensor, or a .grad that was never "
        "computed); create it (torch::zeros, ...) before passing it to a collective",
        what));
  }
  if (t.layout() != c10::kStrided) {
    std::ostringstream layout;
    layout << t.layout();
    throw InvalidArgument(
        fmt::format("{} ({}) has layout {}; collectives need a dense (strided) tensor: call "
                    ".to_dense() first",
                    what, Describe(t), layout.str()));
  }
  const DType dtype = ToDType(t, what);
  const collectives::Device device = ToDevice(t, what);
  if (!t.is_contiguous()) {
    std::ostringstream strides;
    strides << t.strides();
    throw InvalidArgument(fmt::format(
        "{} ({}) is not contiguous (strides {}); call .contiguous() first and, if the result must "
        "land in the original, copy it back with .copy_()",
        what, Describe(t), strides.str()));
  }
  return collectives::TensorView(t.data_ptr(), static_cast<size_t>(t.numel()), dtype, device);
}

std::shared_ptr<ProcessGroup> ProcessGroup::FromEnv(const ProcessGroupOptions& options) {
  const World world = DetectWorld();
  log::SetRank(world.rank);
  // A training step allocates and frees the same large tensors (activations, convolution
  // scratch) every time; glibc returns them to the kernel and the next step faults them in
  // again. Measured (bench/ddp, CNN, one process): 18-33 ms a step with glibc's defaults, 9.5 ms
  // with freed memory kept.
  if (env::kMallocTune.Bool(true) && !KeepFreedMemory()) {
    COHORT_WARN(kRuntime, "mallopt failed; tensors allocated per step may page-fault every step");
  }
  std::shared_ptr<collectives::Store> store;
  if (world.size == 1 && !StoreConfigured()) {
    // A single process needs no rendezvous: run without a launcher or a store server.
    store = std::make_shared<collectives::MemoryStore>();
  } else {
    store = collectives::ConnectStoreFromEnv();
  }
  auto config = collectives::CommConfig::FromEnv(world.rank, world.size, store);
  config.name = options.name;
  const std::string backend =
      !options.backend.empty() ? options.backend : env::kBackend.Str("auto");
  auto comm = collectives::CreateCommunicator(backend, config, options.devices);
  COHORT_INFO(kRuntime, "process group '{}': rank {} of {} ({} world), backend {}", options.name,
              world.rank, world.size, world.source, comm->Backend());
  return std::make_shared<ProcessGroup>(std::move(store), std::move(comm));
}

ProcessGroup::ProcessGroup(std::shared_ptr<collectives::Store> store,
                           std::unique_ptr<collectives::Communicator> comm)
    : store_(std::move(store)), comm_(std::move(comm)) {
  if (!comm_) throw InvalidArgument("ProcessGroup needs a communicator, got null");
}

// The communicator is destroyed before the store its health monitor reports to (member order).
ProcessGroup::~ProcessGroup() = default;

collectives::WorkPtr ProcessGroup::AllReduce(const at::Tensor& t, collectives::ReduceOp op) {
  return comm_->AllReduce(View(t, "all-reduce tensor"), op);
}

collectives::WorkPtr ProcessGroup::Broadcast(const at::Tensor& t, int root) {
  return comm_->Broadcast(View(t, "broadcast tensor"), root);
}

collectives::WorkPtr ProcessGroup::AllGather(const at::Tensor& in, const at::Tensor& out) {
  return comm_->AllGather(View(in, "all-gather input"), View(out, "all-gather output"));
}

collectives::WorkPtr ProcessGroup::ReduceScatter(const at::Tensor& in, const at::Tensor& out,
                                                 collectives::ReduceOp op) {
  return comm_->ReduceScatter(View(in, "reduce-scatter input"), View(out, "reduce-scatter output"),
                              op);
}

collectives::WorkPtr ProcessGroup::Send(const at::Tensor& t, int dst, uint32_t tag) {
  collectives::OpOptions opts;
  opts.tag = tag;
  return comm_->Send(View(t, "send tensor"), dst, opts);
}

collectives::WorkPtr ProcessGroup::Recv(const at::Tensor& t, int src, uint32_t tag) {
  collectives::OpOptions opts;
  opts.tag = tag;
  return comm_->Recv(View(t, "recv tensor"), src, opts);
}

std::vector<collectives::WorkPtr> ProcessGroup::BatchSendRecv(
    const std::vector<collectives::P2POp>& ops) {
  return comm_->BatchSendRecv(ops);
}

void ProcessGroup::Barrier() { comm_->Barrier()->Wait(); }

std::shared_ptr<ProcessGroup> ProcessGroup::Split(int color, int key, const std::string& group) {
  auto comm = comm_->Split(color, key, group);
  if (!comm) return nullptr;
  return std::make_shared<ProcessGroup>(store_, std::move(comm));
}

collectives::P2POp SendOp(const at::Tensor& t, int dst, uint32_t tag) {
  return {collectives::OpType::kSend, View(t, "send tensor"), dst, tag};
}

collectives::P2POp RecvOp(const at::Tensor& t, int src, uint32_t tag) {
  return {collectives::OpType::kRecv, View(t, "recv tensor"), src, tag};
}

}  // namespace cohort::runtime
