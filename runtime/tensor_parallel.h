// Tensor parallelism in the style of Megatron-LM (Shoeybi et al. 2019): layers whose weights are
// cut across the ranks of a tensor-parallel ProcessGroup (ParallelMesh::tp(), or any group), and
// the four autograd functions that move activations and gradients between them.
//
//   region function          forward                          backward
//   CopyToTensorParallel     identity                         all-reduce (sum) of the gradient
//   ReduceFromTensorParallel all-reduce (sum)                 identity
//   GatherFromTensorParallel all-gather along the last dim    this rank's slice of the last dim
//   ScatterToTensorParallel  this rank's slice of the last dim all-gather along the last dim
//
// The layers, with W the unsharded weight [out, in] of torch::nn::Linear(in, out), p = tp size,
// r = tp rank:
//   ColumnParallelLinear  weight [out/p, in] = rows [r*out/p, (r+1)*out/p) of W; bias likewise.
//                         y = copy_to(x) W_r^T + b_r, then all-gathered when gather_output.
//   RowParallelLinear     weight [out, in/p] = columns [r*in/p, (r+1)*in/p) of W; the bias is
//                         whole on every rank and added once, after reduce_from(x_r W_r^T).
//   VocabParallelEmbedding weight [vocab/p, dim] = rows [r*vocab/p, (r+1)*vocab/p); ids outside
//                         this rank's range look up zeros, and reduce_from sums the ranks.
// An MLP block Column(gather_output=false) -> activation -> Row(input_is_parallel=true) thus
// costs one all-reduce of the activations forward and one of their gradient backward.
//
// Initialization: every layer first builds the unsharded torch::nn::Linear / torch::nn::Embedding
// under the current torch RNG (the same draws, in the same order, as constructing that layer
// directly) and keeps its slice. So with the same torch::manual_seed on every tp rank, the shards
// put together equal, bit for bit, the unsharded model built in one process with that seed and
// the same sequence of layer constructions. Every tp rank must therefore construct its layers
// under the same RNG state. (The full weight exists briefly on every rank while constructing.)
//
// A size that the tp size does not divide is refused with one InvalidArgument line.
//
// This header stays free of libtorch: the layers are handles. Each holds a torch::nn::Module
// (parameters "weight" and "bias"), which a parent registers as its submodule:
//
//   struct Mlp : torch::nn::Module {
//     Mlp(std::shared_ptr<ProcessGroup> tp)
//         : fc1(512, 2048, tp, {/*bias=*/true, /*gather_output=*/false}),
//           fc2(2048, 512, tp, {/*bias=*/true, /*input_is_parallel=*/true}) {
//       register_module("fc1", fc1.module());
//       register_module("fc2", fc2.module());
//     }
//     torch::Tensor forward(torch::Tensor x) { return fc2.Forward(torch::gelu(fc1.Forward(x))); }
//     ColumnParallelLinear fc1;
//     RowParallelLinear fc2;
//   };
//
// Copying a handle shares its module (as torch's module holders do). Every tp rank must run the
// same layers in the same order: each forward and backward is a collective over the tp group.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/process_group.h"
#include "runtime/torch_fwd.h"

namespace cohort::runtime {

// --- The autograd functions. Each is a collective over tp (a world of one moves nothing). ----

// Forward identity; backward all-reduces (sums) the gradient over tp.
at::Tensor CopyToTensorParallelRegion(const at::Tensor& x, const std::shared_ptr<ProcessGroup>& tp);
// Forward all-reduces (sums) x over tp; backward passes the gradient through.
at::Tensor ReduceFromTensorParallelRegion(const at::Tensor& x,
                                          const std::shared_ptr<ProcessGroup>& tp);
// Forward concatenates every rank's x along the last dimension, in rank order; backward keeps
// this rank's slice of the gradient. Throws InvalidArgument for a 0-dimensional x.
at::Tensor GatherFromTensorParallelRegion(const at::Tensor& x,
                                          const std::shared_ptr<ProcessGroup>& tp);
// Forward keeps slice tp->Rank() of x's last dimension (size / tp each); backward all-gathers the
// gradient. Throws InvalidArgument when tp does not divide the last dimension.
at::Tensor ScatterToTensorParallelRegion(const at::Tensor& x,
                                         const std::shared_ptr<ProcessGroup>& tp);

// What the functions above handed to the collectives in this process (all tp groups together),
// since the start or the last reset. Bytes are those of the tensors passed: an all-reduce's
// buffer, an all-gather's output (every rank's part). A group of one passes nothing. A ring
// moves about 2(p-1)/p of an all-reduce's bytes and (p-1)/p of an all-gather's per rank.
struct TensorParallelCommStats {
  int64_t all_reduces = 0;
  int64_t all_reduce_bytes = 0;
  int64_t all_gathers = 0;
  int64_t all_gather_bytes = 0;
};
// The counters now (thread-safe).
TensorParallelCommStats TensorParallelComm();
// Sets every counter to zero.
void ResetTensorParallelComm();

// --- The layers. --------------------------------------------------------------------------

struct ColumnParallelOptions {
  bool bias = true;
  // true: Forward returns the full [*, out] output (all-gathered); false: this rank's
  // [*, out/p] slice, ready for a RowParallelLinear with input_is_parallel.
  bool gather_output = true;
};

class ColumnParallelLinear {
 public:
  // Throws InvalidArgument when tp is null, a size is < 1, or tp->Size() does not divide out.
  ColumnParallelLinear(int64_t in_features, int64_t out_features, std::shared_ptr<ProcessGroup> tp,
                       const ColumnParallelOptions& options = {});
  // input [*, in] (the same on every tp rank) -> [*, out], or [*, out/p] without gather_output.
  at::Tensor Forward(const at::Tensor& input) const;
  // The module holding "weight" [out/p, in] and "bias" [out/p]: register it in the parent.
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }
  at::Tensor weight() const;
  at::Tensor bias() const;  // undefined without options.bias

 private:
  std::shared_ptr<torch::nn::Module> module_;
};

struct RowParallelOptions {
  bool bias = true;
  // true: Forward takes this rank's [*, in/p] slice (a ColumnParallelLinear's output without
  // gather_output); false: the full [*, in] input, which it scatters itself.
  bool input_is_parallel = true;
};

class RowParallelLinear {
 public:
  // Throws InvalidArgument when tp is null, a size is < 1, or tp->Size() does not divide in.
  RowParallelLinear(int64_t in_features, int64_t out_features, std::shared_ptr<ProcessGroup> tp,
                    const RowParallelOptions& options = {});
  // [*, in/p] (input_is_parallel) or [*, in] -> [*, out], the same on every tp rank.
  at::Tensor Forward(const at::Tensor& input) const;
  // The module holding "weight" [out, in/p] and "bias" [out] (replicated): register it.
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }
  at::Tensor weight() const;
  at::Tensor bias() const;  // undefined without options.bias

 private:
  std::shared_ptr<torch::nn::Module> module_;
};

class VocabParallelEmbedding {
 public:
  // Throws InvalidArgument when tp is null, a size is < 1, or tp->Size() does not divide vocab.
  VocabParallelEmbedding(int64_t vocab_size, int64_t dim, std::shared_ptr<ProcessGroup> tp);
  // ids (int64, any shape, the same on every tp rank, each in [0, vocab)) -> [*ids, dim].
  // Throws InvalidArgument for an id outside the vocabulary or ids that are not integers.
  at::Tensor Forward(const at::Tensor& ids) const;
  // The module holding "weight" [vocab/p, dim]: register it in the parent.
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }
  at::Tensor weight() const;

 private:
  std::shared_ptr<torch::nn::Module> module_;
};

// --- Sharding, for checkpoints. ---------------------------------------------------------------

// How one parameter is cut across the tp group: this rank holds global[offset, offset + size)
// along dim, where size is the local tensor's size(dim); every other dimension is whole.
struct TensorShard {
  std::vector<int64_t> global_shape;  // the unsharded tensor's shape
  int dim = 0;                        // the dimension that is cut
  int64_t offset = 0;                 // where this rank's slice starts along dim
  int parts = 1;                      // the tp size: how many equal slices make the whole
};

// The shardings of every tensor-parallel parameter under root (root's own included), keyed by
// the parameter's full dotted name as root.named_parameters() spells it ("block.fc1.weight").
// A parameter that is absent is replicated: the same whole tensor on every tp rank (a
// RowParallelLinear's bias, or any ordinary layer's parameters). Finds the layers above however
// deep they sit (through their module()).
std::map<std::string, TensorShard> TensorParallelShardings(const torch::nn::Module& root);

}  // namespace cohort::runtime
