// The four region functions of tensor parallelism (runtime/tensor_parallel.h) as autograd
// functions, and the counters of what they hand to the collectives.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>

#include "common/error.h"
#include "runtime/tensor_parallel.h"

namespace cohort::runtime {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<int64_t> g_all_reduces{0}, g_all_reduce_bytes{0};
std::atomic<int64_t> g_all_gathers{0}, g_all_gather_bytes{0};

// Carries the group from forward to backward through ctx->saved_data, which holds IValues.
struct GroupCapsule : torch::CustomClassHolder {
  explicit GroupCapsule(std::shared_ptr<ProcessGroup> g) : group(std::move(g)) {}
  std::shared_ptr<ProcessGroup> group;
};

void SaveGroup(AutogradContext* ctx, const std::shared_ptr<ProcessGroup>& tp) {
  ctx->saved_data["tp"] = at::IValue::make_capsule(c10::make_intrusive<GroupCapsule>(tp));
}

std::shared_ptr<ProcessGroup> LoadGroup(AutogradContext* ctx) {
  auto holder = ctx->saved_data.at("tp").toCapsule();
  return static_cast<GroupCapsule*>(holder.get())->group;
}

void CheckGroup(const std::shared_ptr<ProcessGroup>& tp, const char* what) {
  if (!tp) throw InvalidArgument(fmt::format("{}: the tensor-parallel group is null", what));
}

// x summed over tp, in a contiguous copy (x itself is left alone: autograd may still need it);
// x itself in a group of one.
at::Tensor AllReduceSum(ProcessGroup& tp, const at::Tensor& x) {
  if (tp.Size() == 1) return x;
  at::Tensor out = x.clone(at::MemoryFormat::Contiguous);
  g_all_reduces.fetch_add(1, std::memory_order_relaxed);
  g_all_reduce_bytes.fetch_add(static_cast<int64_t>(out.nbytes()), std::memory_order_relaxed);
  tp.AllReduce(out)->Wait();
  return out;
}

// Every rank's x concatenated along the last dimension, in rank order. The collective
// concatenates flat buffers, [p, M, n] for p ranks' [M, n]; moving p next to n gives [M, p*n].
at::Tensor AllGatherLastDim(ProcessGroup& tp, const at::Tensor& x) {
  const int64_t p = tp.Size();
  if (p == 1) return x;
  std::vector<int64_t> shape = x.sizes().vec();
  const int64_t n = shape.back();
  shape.back() = n * p;
  if (x.numel() == 0) return at::empty(shape, x.options());
  at::Tensor in = x.contiguous();
  at::Tensor flat = at::empty({p * in.numel()}, in.options());
  g_all_gathers.fetch_add(1, std::memory_order_relaxed);
  g_all_gather_bytes.fetch_add(static_cast<int64_t>(flat.nbytes()), std::memory_order_relaxed);
  tp.AllGather(in, flat)->Wait();
  return flat.view({p, in.numel() / n, n}).permute({1, 0, 2}).reshape(shape);
}

// Slice tp.Rank() of x's last dimension, in a contiguous copy (x itself in a group of one).
at::Tensor LastDimSlice(ProcessGroup& tp, const at::Tensor& x, const char* what) {
  const int64_t p = tp.Size();
  if (p == 1) return x;
  const int64_t n = x.size(-1);
  if (n % p != 0) {
    throw InvalidArgument(fmt::format(
        "{}: the last dimension {} is not divisible by the tensor-parallel size {}; choose "
        "sizes that tp divides",
        what, n, p));
  }
  return x.narrow(-1, tp.Rank() * (n / p), n / p).clone(at::MemoryFormat::Contiguous);
}

void CheckHasLastDim(const at::Tensor& x, const char* what) {
  if (!x.defined() || x.dim() == 0) {
    throw InvalidArgument(
        fmt::format("{}: needs a tensor with at least one dimension (it works on the last), got {}",
                    what, x.defined() ? "a 0-dimensional tensor" : "an undefined tensor"));
  }
}

struct CopyToRegion : torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const std::shared_ptr<ProcessGroup>& tp) {
    SaveGroup(ctx, tp);
    return x;  // autograd gives the output a node of its own
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AllReduceSum(*LoadGroup(ctx), grads[0]), at::Tensor()};
  }
};

struct ReduceFromRegion : torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const std::shared_ptr<ProcessGroup>& tp) {
    return AllReduceSum(*tp, x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0], at::Tensor()};
  }
};

struct GatherFromRegion : torch::autograd::Function<GatherFromRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const std::shared_ptr<ProcessGroup>& tp) {
    SaveGroup(ctx, tp);
    return AllGatherLastDim(*tp, x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {LastDimSlice(*LoadGroup(ctx), grads[0], "gather-from-region backward"), at::Tensor()};
  }
};

struct ScatterToRegion : torch::autograd::Function<ScatterToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const std::shared_ptr<ProcessGroup>& tp) {
    SaveGroup(ctx, tp);
    return LastDimSlice(*tp, x, "ScatterToTensorParallelRegion");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {AllGatherLastDim(*LoadGroup(ctx), grads[0]), at::Tensor()};
  }
};

}  // namespace

at::Tensor CopyToTensorParallelRegion(const at::Tensor& x,
                                      const std::shared_ptr<ProcessGroup>& tp) {
  CheckGroup(tp, "CopyToTensorParallelRegion");
  return CopyToRegion::apply(x, tp);
}

at::Tensor ReduceFromTensorParallelRegion(const at::Tensor& x,
                                          const std::shared_ptr<ProcessGroup>& tp) {
  CheckGroup(tp, "ReduceFromTensorParallelRegion");
  return ReduceFromRegion::apply(x, tp);
}

at::Tensor GatherFromTensorParallelRegion(const at::Tensor& x,
                                          const std::shared_ptr<ProcessGroup>& tp) {
  CheckGroup(tp, "GatherFromTensorParallelRegion");
  CheckHasLastDim(x, "GatherFromTensorParallelRegion");
  return GatherFromRegion::apply(x, tp);
}

at::Tensor ScatterToTensorParallelRegion(const at::Tensor& x,
                                         const std::shared_ptr<ProcessGroup>& tp) {
  CheckGroup(tp, "ScatterToTensorParallelRegion");
  CheckHasLastDim(x, "ScatterToTensorParallelRegion");
  return ScatterToRegion::apply(x, tp);
}

TensorParallelCommStats TensorParallelComm() {
  TensorParallelCommStats s;
  s.all_reduces = g_all_reduces.load();
  s.all_reduce_bytes = g_all_reduce_bytes.load();
  s.all_gathers = g_all_gathers.load();
  s.all_gather_bytes = g_all_gather_bytes.load();
  return s;
}

void ResetTensorParallelComm() {
  g_all_reduces = 0;
  g_all_reduce_bytes = 0;
  g_all_gathers = 0;
  g_all_gather_bytes = 0;
}

}  // namespace cohort::runtime
