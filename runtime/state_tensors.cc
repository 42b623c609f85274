#include "runtime/state_tensors.h"

#include <torch/torch.h>

#include <cstring>

#include "common/error.h"
#include "runtime/process_group.h"

namespace cohort::runtime {
namespace {

using checkpoint::HostTensor;
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

template <typename State>
void AdamFields(const State& a, const std::function<void(const char*, const at::Tensor&)>& fn) {
  fn("exp_avg", a.exp_avg());
  fn("exp_avg_sq", a.exp_avg_sq());
  if (a.max_exp_avg_sq().defined()) fn("max_exp_avg_sq", a.max_exp_avg_sq());
  fn("step", torch::tensor(a.step()));
}

template <typename State>
std::unique_ptr<torch::optim::OptimizerParamState> ReadAdam(const OptimizerFields& f) {
  if (!f.has("exp_avg")) return nullptr;  // never stepped
  auto s = std::make_unique<State>();
  s->step(f.scalar("step"));
  s->exp_avg(f.tensor("exp_avg"));
  s->exp_avg_sq(f.tensor("exp_avg_sq"));
  if (f.has("max_exp_avg_sq")) s->max_exp_avg_sq(f.tensor("max_exp_avg_sq"));
  return s;
}

}  // namespace

HostTensor HostCopy(const std::string& name, const at::Tensor& t,
                    checkpoint::HostBufferPool* pool) {
  at::Tensor host = t.detach().to(at::kCPU).contiguous();
  const DType dtype = View(host, name).dtype;
  if (!pool) return HostTensor::Copy(name, dtype, host.sizes().vec(), host.data_ptr());
  HostTensor out = pool->Allocate(name, dtype, host.sizes().vec());
  if (out.nbytes() > 0) std::memcpy(out.mutable_data(), host.data_ptr(), out.nbytes());
  return out;
}

at::Tensor HostView(const HostTensor& h) {
  return torch::from_blob(const_cast<void*>(h.data()), h.shape(),
                          at::TensorOptions().dtype(ToTorch(h.dtype())));
}

std::string ParamStateKey(const at::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}

bool ForEachOptimizerField(const torch::optim::OptimizerParamState& state,
                           const std::function<void(const char*, const at::Tensor&)>& fn) {
  if (auto* s = dynamic_cast<const torch::optim::SGDParamState*>(&state)) {
    if (s->momentum_buffer().defined()) fn("momentum_buffer", s->momentum_buffer());
  } else if (auto* a = dynamic_cast<const torch::optim::AdamParamState*>(&state)) {
    AdamFields(*a, fn);
  } else if (auto* w = dynamic_cast<const torch::optim::AdamWParamState*>(&state)) {
    AdamFields(*w, fn);
  } else {
    return false;
  }
  return true;
}

std::unique_ptr<torch::optim::OptimizerParamState> ReadOptimizerState(
    const torch::optim::Optimizer& opt, const OptimizerFields& fields) {
  if (dynamic_cast<const torch::optim::Adam*>(&opt)) {
    return ReadAdam<torch::optim::AdamParamState>(fields);
  }
  if (dynamic_cast<const torch::optim::AdamW*>(&opt)) {
    return ReadAdam<torch::optim::AdamWParamState>(fields);
  }
  if (!fields.has("momentum_buffer")) return nullptr;
  auto s = std::make_unique<torch::optim::SGDParamState>();
  s->momentum_buffer(fields.tensor("momentum_buffer"));
  return s;
}

HostTensor CaptureRng(checkpoint::HostBufferPool* pool) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return HostCopy("rng/cpu", gen.get_state(), pool);
}

void RestoreRng(const HostTensor& rng) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(HostView(rng).clone());
}

void PutSamplerAttributes(const TrainerState& state, checkpoint::Shard& shard) {
  shard.attributes["sampler_epoch"] = state.sampler.epoch;
  shard.attributes["sampler_position"] = static_cast<int64_t>(state.sampler.position);
  shard.attributes["sampler_seed"] = static_cast<int64_t>(state.sampler.seed);
  if (!state.tracking_run_id.empty()) shard.attributes["tracking_run_id"] = state.tracking_run_id;
}

std::string TextAttribute(const checkpoint::Shard& shard, const std::string& name) {
  const auto it = shard.attributes.find(name);
  if (it == shard.attributes.end()) return "";
  const auto* text = std::get_if<std::string>(&it->second);
  return text ? *text : "";
}

}  // namespace cohort::runtime
