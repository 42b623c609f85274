#include "runtime/sharded_state.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cstring>
#include <map>

#include "common/error.h"
#include "runtime/process_group.h"
#include "runtime/state_tensors.h"
#include "runtime/tensor_parallel.h"

namespace cohort::runtime {
namespace {

using checkpoint::HostTensor;
using checkpoint::Shard;
using collectives::DType;

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
  return HostView(reader.Read({name, View(like, name).dtype, global, box})).clone();
}

}  // namespace

std::vector<ParamSharding> TensorParallelParamShardings(const torch::nn::Module& module) {
  std::vector<ParamSharding> out;
  for (const auto& [name, tp] : TensorParallelShardings(module)) {
    ParamSharding s{name, tp.global_shape, std::vector<int64_t>(tp.global_shape.size(), 0)};
    s.offsets[tp.dim] = tp.offset;
    out.push_back(std::move(s));
  }
  return out;
}

Shard CaptureShardedState(const torch::nn::Module& module, const torch::optim::Optimizer& optimizer,
                          const TrainerState& state, const std::vector<ParamSharding>& shardings,
                          bool with_model, checkpoint::HostBufferPool* pool) {
  torch::NoGradGuard no_grad;
  Shard shard;
  shard.step = state.step;
  shard.epoch = state.epoch;
  PutSamplerAttributes(state, shard);
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
      shard.tensors.push_back(HostCopy(model, item.value(), pool));
      const auto [global, box] = GlobalBox(item.key(), item.value(), by_name);
      if (global != item.value().sizes().vec()) shard.slices[model] = {global, box.offsets};
      const auto it = opt_state.find(ParamStateKey(item.value()));
      if (it == opt_state.end()) continue;  // never stepped
      const bool known =
          ForEachOptimizerField(*it->second, [&](const char* field, const at::Tensor& t) {
            const std::string name = fmt::format("optimizer/{}/{}", item.key(), field);
            shard.tensors.push_back(HostCopy(name, t, pool));
            if (t.dim() > 0 && global != t.sizes().vec()) {
              shard.slices[name] = {global, box.offsets};
            }
          });
      if (!known) {
        throw InvalidArgument(
            "sharded checkpoints save SGD, Adam and AdamW state; use one of them");
      }
    }
    for (const auto& item : module.named_buffers(/*recurse=*/true)) {
      shard.tensors.push_back(HostCopy("model/" + item.key(), item.value(), pool));
    }
    shard.attributes["parameters"] = names;
  }
  shard.tensors.push_back(CaptureRng(pool));
  return shard;
}

TrainerState RestoreShardedState(checkpoint::ShardedReader& reader, int rank,
                                 torch::nn::Module& module, torch::optim::Optimizer& optimizer,
                                 const std::vector<ParamSharding>& shardings) {
  torch::NoGradGuard no_grad;
  std::map<std::string, const ParamSharding*> by_name;
  for (const ParamSharding& s : shardings) by_name[s.name] = &s;
  auto& opt_state = optimizer.state();
  for (auto& item : module.named_parameters(/*recurse=*/true)) {
    const at::Tensor& p = item.value();
    const auto [global, box] = GlobalBox(item.key(), p, by_name);
    p.copy_(ReadInto(reader, "model/" + item.key(), p, global, box));
    const std::string prefix = fmt::format("optimizer/{}/", item.key());
    OptimizerFields fields;
    fields.has = [&](const char* f) { return reader.Has(prefix + f); };
    fields.tensor = [&](const char* f) { return ReadInto(reader, prefix + f, p, global, box); };
    fields.scalar = [&](const char* f) {
      return ReadInto(reader, prefix + f, torch::tensor(int64_t{0}), {}, checkpoint::Box{})
          .item<int64_t>();
    };
    if (auto s = ReadOptimizerState(optimizer, fields)) opt_state[ParamStateKey(p)] = std::move(s);
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
    if (const HostTensor* rng = own->Find("rng/cpu")) RestoreRng(*rng);
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
  if (first) state.tracking_run_id = TextAttribute(*first, "tracking_run_id");
  return state;
}

}  // namespace cohort::runtime
