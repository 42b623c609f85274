#include "runtime/train_state.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cstring>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "runtime/process_group.h"

namespace cohort::runtime {

using checkpoint::HostTensor;
using checkpoint::Shard;
using collectives::DType;

namespace {

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

thread_local checkpoint::HostBufferPool* t_pool = nullptr;  // CaptureState's, while it runs

// A host copy of t under name (phase one of a save), into a pooled buffer when there is a pool.
HostTensor Copy(const std::string& name, const at::Tensor& t) {
  at::Tensor host = t.detach().to(at::kCPU).contiguous();
  const DType dtype = View(host, name).dtype;
  if (!t_pool) return HostTensor::Copy(name, dtype, host.sizes().vec(), host.data_ptr());
  HostTensor out = t_pool->Allocate(name, dtype, host.sizes().vec());
  if (out.nbytes() > 0) std::memcpy(out.mutable_data(), host.data_ptr(), out.nbytes());
  return out;
}

// The tensor called name in shard, checked against the shape and dtype it must have.
at::Tensor Find(const Shard& shard, const std::string& name, const at::Tensor* like) {
  const HostTensor* h = shard.Find(name);
  if (!h) {
    throw DataLoss(fmt::format(
        "checkpoint has no tensor '{}': it was saved from a different model; resume with the "
        "same model definition or start a new run (another --checkpoint-uri or run id)",
        name));
  }
  at::Tensor t = torch::from_blob(const_cast<void*>(h->data()), h->shape(),
                                  at::TensorOptions().dtype(ToTorch(h->dtype())));
  if (like && (t.sizes() != like->sizes() || t.scalar_type() != like->scalar_type())) {
    throw DataLoss(
        fmt::format("checkpoint tensor '{}' is {} [{}], but the model's is {} [{}]; resume "
                    "with the model the snapshot was saved from",
                    name, c10::toString(t.scalar_type()), t.sizes(),
                    c10::toString(like->scalar_type()), like->sizes()));
  }
  return t;
}

std::string Key(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

std::vector<at::Tensor> AllParams(const torch::optim::Optimizer& opt) {
  std::vector<at::Tensor> out;
  for (const auto& g : opt.param_groups()) {
    for (const auto& p : g.params()) out.push_back(p);
  }
  return out;
}

void CaptureOptimizer(const torch::optim::Optimizer& opt, Shard& shard) {
  const auto params = AllParams(opt);
  const auto& state = opt.state();
  bool known = true;
  for (size_t k = 0; k < params.size() && known; ++k) {
    auto it = state.find(Key(params[k]));
    if (it == state.end()) continue;  // no step taken for this parameter yet
    const std::string prefix = fmt::format("optimizer/{}/", k);
    if (auto* s = dynamic_cast<const torch::optim::SGDParamState*>(it->second.get())) {
      if (s->momentum_buffer().defined()) {
        shard.tensors.push_back(Copy(prefix + "momentum_buffer", s->momentum_buffer()));
      }
    } else if (auto* a = dynamic_cast<const torch::optim::AdamParamState*>(it->second.get())) {
      shard.tensors.push_back(Copy(prefix + "exp_avg", a->exp_avg()));
      shard.tensors.push_back(Copy(prefix + "exp_avg_sq", a->exp_avg_sq()));
      if (a->max_exp_avg_sq().defined()) {
        shard.tensors.push_back(Copy(prefix + "max_exp_avg_sq", a->max_exp_avg_sq()));
      }
      shard.tensors.push_back(Copy(prefix + "step", torch::tensor(a->step())));
    } else if (auto* w = dynamic_cast<const torch::optim::AdamWParamState*>(it->second.get())) {
      shard.tensors.push_back(Copy(prefix + "exp_avg", w->exp_avg()));
      shard.tensors.push_back(Copy(prefix + "exp_avg_sq", w->exp_avg_sq()));
      if (w->max_exp_avg_sq().defined()) {
        shard.tensors.push_back(Copy(prefix + "max_exp_avg_sq", w->max_exp_avg_sq()));
      }
      shard.tensors.push_back(Copy(prefix + "step", torch::tensor(w->step())));
    } else {
      known = false;
    }
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
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(&opt) != nullptr;
  const bool adam = dynamic_cast<torch::optim::Adam*>(&opt) != nullptr;
  for (size_t k = 0; k < params.size(); ++k) {
    const std::string prefix = fmt::format("optimizer/{}/", k);
    const at::Tensor& p = params[k];
    if (adam || adamw) {
      if (!shard.Find(prefix + "exp_avg")) continue;  // never stepped
      auto read = [&](const char* f) { return Find(shard, prefix + f, &p).clone(); };
      if (adam) {
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step(ScalarOf(shard, prefix + "step"));
        s->exp_avg(read("exp_avg"));
        s->exp_avg_sq(read("exp_avg_sq"));
        if (shard.Find(prefix + "max_exp_avg_sq")) s->max_exp_avg_sq(read("max_exp_avg_sq"));
        state[Key(p)] = std::move(s);
      } else {
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->step(ScalarOf(shard, prefix + "step"));
        s->exp_avg(read("exp_avg"));
        s->exp_avg_sq(read("exp_avg_sq"));
        if (shard.Find(prefix + "max_exp_avg_sq")) s->max_exp_avg_sq(read("max_exp_avg_sq"));
        state[Key(p)] = std::move(s);
      }
    } else if (shard.Find(prefix + "momentum_buffer")) {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(Find(shard, prefix + "momentum_buffer", &p).clone());
      state[Key(p)] = std::move(s);
    }
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
  t_pool = pool;
  struct Reset {
    ~Reset() { t_pool = nullptr; }
  } reset;
  Shard shard;
  shard.step = state.step;
  shard.epoch = state.epoch;
  shard.attributes["sampler_epoch"] = state.sampler.epoch;
  shard.attributes["sampler_position"] = static_cast<int64_t>(state.sampler.position);
  shard.attributes["sampler_seed"] = static_cast<int64_t>(state.sampler.seed);
  shard.attributes["world_size"] = static_cast<int64_t>(world_size);
  if (with_model) {
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      shard.tensors.push_back(Copy("model/" + item.key(), item.value()));
    }
    for (const auto& item : module.named_buffers(/*recurse=*/true)) {
      shard.tensors.push_back(Copy("model/" + item.key(), item.value()));
    }
    CaptureOptimizer(optimizer, shard);
  }
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    shard.tensors.push_back(Copy("rng/cpu", gen.get_state()));
  }
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
  if (own_shard) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(Find(*own_shard, "rng/cpu", nullptr).clone());
  }
  TrainerState state;
  state.step = model_shard.step;
  state.epoch = model_shard.epoch;
  state.sampler.epoch = IntAttr(own, "sampler_epoch", model_shard.epoch);
  state.sampler.position = static_cast<size_t>(IntAttr(own, "sampler_position", 0));
  state.sampler.seed = static_cast<uint64_t>(IntAttr(own, "sampler_seed", 0));
  return state;
}

}  // namespace cohort::runtime
