#include "runtime/train_state.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cstring>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "runtime/process_group.h"
#include "runtime/state_tensors.h"

namespace cohort::runtime {

using checkpoint::HostTensor;
using checkpoint::Shard;
using collectives::DType;

namespace {

// The tensor called name in shard; throws DataLoss when there is none.
const HostTensor& Required(const Shard& shard, const std::string& name) {
  const HostTensor* h = shard.Find(name);
  if (!h) {
    throw DataLoss(fmt::format(
        "checkpoint has no tensor '{}': it was saved from a different model; resume with the "
        "same model definition or start a new run (another --checkpoint-uri or run id)",
        name));
  }
  return *h;
}

// The tensor called name in shard, checked against the shape and dtype it must have.
at::Tensor Find(const Shard& shard, const std::string& name, const at::Tensor* like) {
  at::Tensor t = HostView(Required(shard, name));
  if (like && (t.sizes() != like->sizes() || t.scalar_type() != like->scalar_type())) {
    throw DataLoss(
        fmt::format("checkpoint tensor '{}' is {} [{}], but the model's is {} [{}]; resume "
                    "with the model the snapshot was saved from",
                    name, c10::toString(t.scalar_type()), t.sizes(),
                    c10::toString(like->scalar_type()), like->sizes()));
  }
  return t;
}

std::vector<at::Tensor> AllParams(const torch::optim::Optimizer& opt) {
  std::vector<at::Tensor> out;
  for (const auto& g : opt.param_groups()) {
    for (const auto& p : g.params()) out.push_back(p);
  }
  return out;
}

void CaptureOptimizer(const torch::optim::Optimizer& opt, Shard& shard,
                      checkpoint::HostBufferPool* pool) {
  const auto params = AllParams(opt);
  const auto& state = opt.state();
  bool known = true;
  for (size_t k = 0; k < params.size() && known; ++k) {
    auto it = state.find(ParamStateKey(params[k]));
    if (it == state.end()) continue;  // no step taken for this parameter yet
    const std::string prefix = fmt::format("optimizer/{}/", k);
    known = ForEachOptimizerField(*it->second, [&](const char* field, const at::Tensor& t) {
      shard.tensors.push_back(HostCopy(prefix + field, t, pool));
    });
  }
  if (known) return;
  // Another optimizer: its own serialization, as bytes.
  shard.tensors.erase(
      std::remove_if(shard.tensors.begin(), shard.tensors.end(),
                     [](const HostTensor& t) { return t.name().rfind("optimizer/", 0) == 0; }),
      shard.tensors.end());
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  const std::string s = bytes.str();
  shard.tensors.push_back(HostTensor::Copy("optimizer/archive", DType::kUInt8,
                                           {static_cast<int64_t>(s.size())}, s.data()));
}

int64_t ScalarOf(const Shard& shard, const std::string& name) {
  return Find(shard, name, nullptr).item<int64_t>();
}

void RestoreOptimizer(const Shard& shard, torch::optim::Optimizer& opt) {
  if (const HostTensor* a = shard.Find("optimizer/archive")) {
    std::string s(static_cast<const char*>(a->data()), a->nbytes());
    std::istringstream in(s);
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    opt.load(archive);
    return;
  }
  torch::NoGradGuard no_grad;
  const auto params = AllParams(opt);
  auto& state = opt.state();
  for (size_t k = 0; k < params.size(); ++k) {
    const std::string prefix = fmt::format("optimizer/{}/", k);
    const at::Tensor& p = params[k];
    OptimizerFields fields;
    fields.has = [&](const char* f) { return shard.Find(prefix + f) != nullptr; };
    fields.tensor = [&](const char* f) { return Find(shard, prefix + f, &p).clone(); };
    fields.scalar = [&](const char* f) { return ScalarOf(shard, prefix + f); };
    if (auto s = ReadOptimizerState(opt, fields)) state[ParamStateKey(p)] = std::move(s);
  }
}

int64_t IntAttr(const Shard& shard, const std::string& name, int64_t fallback) {
  auto it = shard.attributes.find(name);
  if (it == shard.attributes.end()) return fallback;
  if (auto* v = std::get_if<int64_t>(&it->second)) return *v;
  return fallback;
}

}  // namespace

Shard CaptureState(const torch::nn::Module& module, const torch::optim::Optimizer& optimizer,
                   const TrainerState& state, int world_size, bool with_model,
                   checkpoint::HostBufferPool* pool) {
  torch::NoGradGuard no_grad;
  Shard shard;
  shard.step = state.step;
  shard.epoch = state.epoch;
  PutSamplerAttributes(state, shard);
  shard.attributes["world_size"] = static_cast<int64_t>(world_size);
  if (with_model) {
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      shard.tensors.push_back(HostCopy("model/" + item.key(), item.value(), pool));
    }
    for (const auto& item : module.named_buffers(/*recurse=*/true)) {
      shard.tensors.push_back(HostCopy("model/" + item.key(), item.value(), pool));
    }
    CaptureOptimizer(optimizer, shard, pool);
  }
  shard.tensors.push_back(CaptureRng(pool));
  return shard;
}

TrainerState RestoreState(const Shard& model_shard, const Shard* own_shard,
                          torch::nn::Module& module, torch::optim::Optimizer& optimizer) {
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters(/*recurse=*/true)) {
    item.value().copy_(Find(model_shard, "model/" + item.key(), &item.value()));
  }
  for (auto& item : module.named_buffers(/*recurse=*/true)) {
    item.value().copy_(Find(model_shard, "model/" + item.key(), &item.value()));
  }
  RestoreOptimizer(model_shard, optimizer);
  const Shard& own = own_shard ? *own_shard : model_shard;
  if (own_shard) RestoreRng(Required(*own_shard, "rng/cpu"));
  TrainerState state;
  state.step = model_shard.step;
  state.epoch = model_shard.epoch;
  state.sampler.epoch = IntAttr(own, "sampler_epoch", model_shard.epoch);
  state.sampler.position = static_cast<size_t>(IntAttr(own, "sampler_position", 0));
  state.sampler.seed = static_cast<uint64_t>(IntAttr(own, "sampler_seed", 0));
  state.tracking_run_id = TextAttribute(model_shard, "tracking_run_id");
  return state;
}

}  // namespace cohort::runtime
