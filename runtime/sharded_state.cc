#include "runtime/sharded_state.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cstring>
#include <map>

#include "common/error.h"
#include "runtime/process_group.h"

namespace cohort::runtime {
namespace {

using checkpoint::HostTensor;
using checkpoint::Shard;
using collectives::DType;

at::ScalarType ToTorch(DType d) {
  switch (d) {
    case DType::kFloat32:
      return at::kFloat;
    case DType::kFloat64:
      return at::kDouble;
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    case DType::kInt32:
      return at::kInt;
    case DType::kInt64:
      return at::kLong;
    case DType::kUInt8:
      return at::kByte;
  }
  throw Internal("unknown dtype");
}

HostTensor Copy(const std::string& name, const at::Tensor& t, checkpoint::HostBufferPool* pool) {
  at::Tensor host = t.detach().to(at::kCPU).contiguous();
  const DType dtype = View(host, name).dtype;
  if (!pool) return HostTensor::Copy(name, dtype, host.sizes().vec(), host.data_ptr());
  HostTensor out = pool->Allocate(name, dtype, host.sizes().vec());
  if (out.nbytes() > 0) std::memcpy(out.mutable_data(), host.data_ptr(), out.nbytes());
  return out;
}

std::string Key(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// Optimizer state fields of one parameter, as (field, tensor); scalars for Adam's step.
std::vector<std::pair<std::string, at::Tensor>> StateOf(
    const torch::optim::OptimizerParamState& s) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto adam_like = [&](const auto& a) {
    out.emplace_back("exp_avg", a.exp_avg());
    out.emplace_back("exp_avg_sq", a.exp_avg_sq());
    if (a.max_exp_avg_sq().defined()) out.emplace_back("max_exp_avg_sq", a.max_exp_avg_sq());
    out.emplace_back("step", torch::tensor(a.step()));
  };
  if (auto* g = dynamic_cast<const torch::optim::SGDParamState*>(&s)) {
    if (g->momentum_buffer().defined()) out.emplace_back("momentum_buffer", g->momentum_buffer());
  } else if (auto* a = dynamic_cast<const torch::optim::AdamParamState*>(&s)) {
    adam_like(*a);
  } else if (auto* w = dynamic_cast<const torch::optim::AdamWParamState*>(&s)) {
    adam_like(*w);
  } else {
    throw InvalidArgument("sharded checkpoints save SGD, Adam and AdamW state; use one of them");
  }
  return out;
}

// The global (shape, box) of a local tensor called name.
std::pair<checkpoint::Shape, checkpoint::Box> GlobalBox(
    const std::string& name, const at::Tensor& local,
    const std::map<std::string, const ParamSharding*>& by_name) {
  const auto it = by_name.find(name);
  if (it == by_name.end())
    return {local.sizes().vec(), checkpoint::Box::Whole(local.sizes().vec())};
  return {it->second->global_shape, checkpoint::Box{it->second->offsets, local.sizes().vec()}};
}

at::Tensor ReadInto(checkpoint::ShardedReader& reader, const std::string& name,
                    const at::Tensor& like, const checkpoint::Shape& global,
                    const checkpoint::Box& box) {
  const HostTensor h = reader.Read({name, View(like, name).dtype, global, box});
  return torch::from_blob(const_cast<void*>(h.data()), h.shape(),
                          at::TensorOptions().dtype(ToTorch(h.dtype())))
      .clone();
}

}  // namespace

Shard CaptureShardedState(const torch::nn::Module& module, const torch::optim::Optimizer& optimizer,
                          const TrainerState& state, const std::vector<ParamSharding>& shardings,
                          bool with_model, checkpoint::HostBufferPool* pool) {
  torch::NoGradGuard no_grad;
  Shard shard;
  shard.step = state.step;
  shard.epoch = state.epoch;
  shard.attributes["sampler_epoch"] = state.sampler.epoch;
  shard.attributes["sampler_position"] = static_cast<int64_t>(state.sampler.position);
  shard.attributes["sampler_seed"] = static_cast<int64_t>(state.sampler.seed);
  std::map<std::string, const ParamSharding*> by_name;
  for (const ParamSharding& s : shardings) by_name[s.name] = &s;
  const auto params = module.named_parameters(/*recurse=*/true);
  for (const ParamSharding& s : shardings) {
    if (!params.contains(s.name)) {
      throw InvalidArgument(fmt::format("sharding names '{}', which is not a parameter", s.name));
    }
  }
  if (with_model) {
    std::string names;
    const auto& opt_state = optimizer.state();
    for (const auto& item : params) {
      names += item.key() + "\n";
      const std::string model = "model/" + item.key();
      shard.tensors.push_back(Copy(model, item.value(), pool));
      const auto [global, box] = GlobalBox(item.key(), item.value(), by_name);
      if (global != item.value().sizes().vec()) shard.slices[model] = {global, box.offsets};
      const auto it = opt_state.find(Key(item.value()));
      if (it == opt_state.end()) continue;  // never stepped
      for (const auto& [field, t] : StateOf(*it->second)) {
        const std::string name = fmt::format("optimizer/{}/{}", item.key(), field);
        shard.tensors.push_back(Copy(name, t, pool));
        if (t.dim() > 0 && global != t.sizes().vec()) shard.slices[name] = {global, box.offsets};
      }
    }
    for (const auto& item : module.named_buffers(/*recurse=*/true)) {
      shard.tensors.push_back(Copy("model/" + item.key(), item.value(), pool));
    }
    shard.attributes["parameters"] = names;
  }
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  shard.tensors.push_back(Copy("rng/cpu", gen.get_state(), pool));
  return shard;
}

TrainerState RestoreShardedState(checkpoint::ShardedReader& reader, int rank,
                                 torch::nn::Module& module, torch::optim::Optimizer& optimizer,
                                 const std::vector<ParamSharding>& shardings) {
  torch::NoGradGuard no_grad;
  std::map<std::string, const ParamSharding*> by_name;
  for (const ParamSharding& s : shardings) by_name[s.name] = &s;
  auto& opt_state = optimizer.state();
  const bool adam = dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr;
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
  for (auto& item : module.named_parameters(/*recurse=*/true)) {
    const at::Tensor& p = item.value();
    const auto [global, box] = GlobalBox(item.key(), p, by_name);
    p.copy_(ReadInto(reader, "model/" + item.key(), p, global, box));
    const std::string prefix = fmt::format("optimizer/{}/", item.key());
    auto read = [&](const char* f) { return ReadInto(reader, prefix + f, p, global, box); };
    auto step = [&] {
      return ReadInto(reader, prefix + "step", torch::tensor(int64_t{0}), {}, checkpoint::Box{})
          .item<int64_t>();
    };
    auto fill = [&](auto s) {
      s->step(step());
      s->exp_avg(read("exp_avg"));
      s->exp_avg_sq(read("exp_avg_sq"));
      if (reader.Has(prefix + "max_exp_avg_sq")) s->max_exp_avg_sq(read("max_exp_avg_sq"));
      opt_state[Key(p)] = std::move(s);
    };
    if ((adam || adamw) && reader.Has(prefix + "exp_avg")) {
      if (adam) fill(std::make_unique<torch::optim::AdamParamState>());
      if (adamw) fill(std::make_unique<torch::optim::AdamWParamState>());
    } else if (!adam && !adamw && reader.Has(prefix + "momentum_buffer")) {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(read("momentum_buffer"));
      opt_state[Key(p)] = std::move(s);
    }
  }
  for (auto& item : module.named_buffers(/*recurse=*/true)) {
    const auto shape = item.value().sizes().vec();
    item.value().copy_(ReadInto(reader, "model/" + item.key(), item.value(), shape,
                                checkpoint::Box::Whole(shape)));
  }
  const auto own = reader.ReadLocal(rank);
  const auto first = reader.ReadLocal(0);
  const Shard& meta = own ? *own : *first;
  if (own) {
    if (const HostTensor* rng = own->Find("rng/cpu")) {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(
          torch::from_blob(const_cast<void*>(rng->data()), rng->shape(), at::kByte).clone());
    }
  }
  auto attr = [&](const char* key) {
    const auto it = meta.attributes.find(key);
    const int64_t* v = it == meta.attributes.end() ? nullptr : std::get_if<int64_t>(&it->second);
    return v ? *v : 0;
  };
  TrainerState state;
  state.step = reader.manifest().step;
  state.epoch = reader.manifest().epoch;
  state.sampler.epoch = attr("sampler_epoch");
  state.sampler.position = static_cast<size_t>(attr("sampler_position"));
  state.sampler.seed = static_cast<uint64_t>(attr("sampler_seed"));
  state.world = reader.layout().mesh.dp;  // the sampler shares data over data-parallel ranks
  return state;
}

}  // namespace cohort::runtime
