// The tensor-parallel layers (runtime/tensor_parallel.h) and the sharding map. The region
// functions live in tp_autograd.cc.
#include "runtime/tensor_parallel.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "common/error.h"

namespace cohort::runtime {
namespace {

// A module whose parameters are (some of them) slices of unsharded tensors. Every layer of
// tensor_parallel.h is one, which is how TensorParallelShardings finds them.
class ShardedModule : public torch::nn::Module {
 public:
  ShardedModule(const std::string& name, std::shared_ptr<ProcessGroup> tp)
      : torch::nn::Module(name), tp_(std::move(tp)) {}
  // Local parameter name ("weight") -> its sharding.
  const std::map<std::string, TensorShard>& shards() const { return shards_; }
  const std::shared_ptr<ProcessGroup>& tp() const { return tp_; }

 protected:
  // Registers the slice [offset, offset + full.size(dim) / p) of full along dim as name.
  at::Tensor RegisterShard(const std::string& name, const at::Tensor& full, int dim) {
    const int p = tp_->Size();
    const int64_t len = full.size(dim) / p;
    const int64_t offset = tp_->Rank() * len;
    shards_[name] = TensorShard{full.sizes().vec(), dim, offset, p};
    return register_parameter(name, full.narrow(dim, offset, len).detach().clone());
  }

 private:
  std::shared_ptr<ProcessGroup> tp_;
  std::map<std::string, TensorShard> shards_;
};

// Refuses a null group, a size below 1 and a size tp does not divide (when must_divide).
void CheckSize(const char* layer, const char* what, int64_t size,
               const std::shared_ptr<ProcessGroup>& tp, bool must_divide) {
  if (!tp) throw InvalidArgument(fmt::format("{}: the tensor-parallel group is null", layer));
  if (size < 1) {
    throw InvalidArgument(fmt::format("{}: {} is {}; it must be at least 1", layer, what, size));
  }
  if (must_divide && size % tp->Size() != 0) {
    throw InvalidArgument(fmt::format(
        "{}: {} {} is not divisible by the tensor-parallel size {}; choose a size that divides "
        "it or pad the layer",
        layer, what, size, tp->Size()));
  }
}

// The unsharded torch::nn::Linear(in, out), drawn from the current RNG exactly as constructing
// it directly would.
torch::nn::Linear FullLinear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

class ColumnParallelLinearImpl : public ShardedModule {
 public:
  ColumnParallelLinearImpl(int64_t in, int64_t out, std::shared_ptr<ProcessGroup> tp,
                           const ColumnParallelOptions& options)
      : ShardedModule("ColumnParallelLinear", std::move(tp)), in_(in), options_(options) {
    at::NoGradGuard no_grad;
    auto full = FullLinear(in, out, options.bias);
    weight = RegisterShard("weight", full->weight, 0);
    if (options.bias) bias = RegisterShard("bias", full->bias, 0);
  }

  at::Tensor Forward(const at::Tensor& input) const {
    CheckInput(input);
    at::Tensor y = at::linear(CopyToTensorParallelRegion(input, tp()), weight, bias);
    return options_.gather_output ? GatherFromTensorParallelRegion(y, tp()) : y;
  }

  at::Tensor weight, bias;

 private:
  void CheckInput(const at::Tensor& input) const {
    if (input.dim() == 0 || input.size(-1) != in_) {
      throw InvalidArgument(fmt::format(
          "ColumnParallelLinear: the input's last dimension must be in_features {}, got shape {}",
          in_, fmt::join(input.sizes().vec(), "x")));
    }
  }

  int64_t in_;
  ColumnParallelOptions options_;
};

class RowParallelLinearImpl : public ShardedModule {
 public:
  RowParallelLinearImpl(int64_t in, int64_t out, std::shared_ptr<ProcessGroup> tp,
                        const RowParallelOptions& options)
      : ShardedModule("RowParallelLinear", std::move(tp)), in_(in), options_(options) {
    at::NoGradGuard no_grad;
    auto full = FullLinear(in, out, options.bias);
    weight = RegisterShard("weight", full->weight, 1);
    // Replicated: added once, after the partial products are summed.
    if (options.bias) bias = register_parameter("bias", full->bias.detach().clone());
  }

  at::Tensor Forward(const at::Tensor& input) const {
    CheckInput(input);
    at::Tensor x = options_.input_is_parallel ? input : ScatterToTensorParallelRegion(input, tp());
    at::Tensor y = ReduceFromTensorParallelRegion(at::linear(x, weight), tp());
    return bias.defined() ? y + bias : y;
  }

  at::Tensor weight, bias;

 private:
  void CheckInput(const at::Tensor& input) const {
    const int64_t want = options_.input_is_parallel ? in_ / tp()->Size() : in_;
    if (input.dim() == 0 || input.size(-1) != want) {
      throw InvalidArgument(fmt::format(
          "RowParallelLinear: the input's last dimension must be {} ({}), got shape {}{}", want,
          options_.input_is_parallel
              ? fmt::format("in_features {} / tensor-parallel size {}", in_, tp()->Size())
              : "in_features",
          fmt::join(input.sizes().vec(), "x"),
          options_.input_is_parallel ? "; pass the full input with input_is_parallel=false" : ""));
    }
  }

  int64_t in_;
  RowParallelOptions options_;
};

class VocabParallelEmbeddingImpl : public ShardedModule {
 public:
  VocabParallelEmbeddingImpl(int64_t vocab, int64_t dim, std::shared_ptr<ProcessGroup> tp)
      : ShardedModule("VocabParallelEmbedding", std::move(tp)), vocab_(vocab) {
    at::NoGradGuard no_grad;
    torch::nn::Embedding full(vocab, dim);
    weight = RegisterShard("weight", full->weight, 0);
    begin_ = shards().at("weight").offset;
    end_ = begin_ + weight.size(0);
  }

  at::Tensor Forward(const at::Tensor& ids) const {
    CheckIds(ids);
    if (tp()->Size() == 1) return at::embedding(weight, ids);
    // Megatron's masked lookup: ids of other ranks read row 0 and are zeroed, so the sum over
    // ranks holds each id's row exactly once (and only the owner's row gets a gradient).
    at::Tensor outside = (ids < begin_).logical_or(ids >= end_);
    at::Tensor local = (ids - begin_).masked_fill(outside, 0);
    at::Tensor rows = at::embedding(weight, local).masked_fill(outside.unsqueeze(-1), 0.0);
    return ReduceFromTensorParallelRegion(rows, tp());
  }

  at::Tensor weight;

 private:
  void CheckIds(const at::Tensor& ids) const {
    if (!ids.defined() || !at::isIntegralType(ids.scalar_type(), /*includeBool=*/false)) {
      throw InvalidArgument(
          "VocabParallelEmbedding: ids must be an integer tensor (int64 token ids)");
    }
    if (ids.numel() == 0) return;
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= vocab_) {
      throw InvalidArgument(
          fmt::format("VocabParallelEmbedding: token id {} is outside the vocabulary [0, {})",
                      lo < 0 ? lo : hi, vocab_));
    }
  }

  int64_t vocab_;
  int64_t begin_ = 0, end_ = 0;
};

template <typename Impl>
Impl& As(const std::shared_ptr<torch::nn::Module>& m) {
  return static_cast<Impl&>(*m);
}

}  // namespace

ColumnParallelLinear::ColumnParallelLinear(int64_t in_features, int64_t out_features,
                                           std::shared_ptr<ProcessGroup> tp,
                                           const ColumnParallelOptions& options) {
  CheckSize("ColumnParallelLinear", "in_features", in_features, tp, false);
  CheckSize("ColumnParallelLinear", "out_features", out_features, tp, true);
  module_ =
      std::make_shared<ColumnParallelLinearImpl>(in_features, out_features, std::move(tp), options);
}

at::Tensor ColumnParallelLinear::Forward(const at::Tensor& input) const {
  return As<ColumnParallelLinearImpl>(module_).Forward(input);
}
at::Tensor ColumnParallelLinear::weight() const {
  return As<ColumnParallelLinearImpl>(module_).weight;
}
at::Tensor ColumnParallelLinear::bias() const { return As<ColumnParallelLinearImpl>(module_).bias; }

RowParallelLinear::RowParallelLinear(int64_t in_features, int64_t out_features,
                                     std::shared_ptr<ProcessGroup> tp,
                                     const RowParallelOptions& options) {
  CheckSize("RowParallelLinear", "in_features", in_features, tp, true);
  CheckSize("RowParallelLinear", "out_features", out_features, tp, false);
  module_ =
      std::make_shared<RowParallelLinearImpl>(in_features, out_features, std::move(tp), options);
}

at::Tensor RowParallelLinear::Forward(const at::Tensor& input) const {
  return As<RowParallelLinearImpl>(module_).Forward(input);
}
at::Tensor RowParallelLinear::weight() const { return As<RowParallelLinearImpl>(module_).weight; }
at::Tensor RowParallelLinear::bias() const { return As<RowParallelLinearImpl>(module_).bias; }

VocabParallelEmbedding::VocabParallelEmbedding(int64_t vocab_size, int64_t dim,
                                               std::shared_ptr<ProcessGroup> tp) {
  CheckSize("VocabParallelEmbedding", "vocab_size", vocab_size, tp, true);
  CheckSize("VocabParallelEmbedding", "dim", dim, tp, false);
  module_ = std::make_shared<VocabParallelEmbeddingImpl>(vocab_size, dim, std::move(tp));
}

at::Tensor VocabParallelEmbedding::Forward(const at::Tensor& ids) const {
  return As<VocabParallelEmbeddingImpl>(module_).Forward(ids);
}
at::Tensor VocabParallelEmbedding::weight() const {
  return As<VocabParallelEmbeddingImpl>(module_).weight;
}

std::map<std::string, TensorShard> TensorParallelShardings(const torch::nn::Module& root) {
  std::map<std::string, TensorShard> out;
  auto add = [&out](const std::string& prefix, const torch::nn::Module& m) {
    const auto* sharded = dynamic_cast<const ShardedModule*>(&m);
    if (!sharded) return;
    for (const auto& [name, shard] : sharded->shards()) {
      out[prefix.empty() ? name : prefix + "." + name] = shard;
    }
  };
  add("", root);
  // Without include_self: that form needs root to be owned by a shared_ptr.
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    add(item.key(), *item.value());
  }
  return out;
}

}  // namespace cohort::runtime
