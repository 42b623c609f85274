#include "runtime/ps_async.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <random>

#include "collectives/ps/async_client.h"
#include "collectives/ps/async_optimizer.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "runtime/state_tensors.h"

namespace cohort::runtime {
namespace {

namespace cps = collectives::ps;

cps::AsyncOptimizerConfig ConfigOf(torch::optim::Optimizer& optimizer) {
  if (optimizer.param_groups().size() != 1) {
    throw InvalidArgument(fmt::format(
        "ps async mode: the optimizer has {} parameter groups; the servers run one: pass all "
        "parameters in one group",
        optimizer.param_groups().size()));
  }
  auto& options = optimizer.param_groups()[0].options();
  cps::AsyncOptimizerConfig c;
  if (dynamic_cast<torch::optim::Adam*>(&optimizer)) {
    auto& o = static_cast<torch::optim::AdamOptions&>(options);
    if (o.amsgrad()) {
      throw InvalidArgument(
          "ps async mode: the servers run Adam without amsgrad; pass amsgrad(false)");
    }
    c.kind = cps::AsyncOptimizerConfig::Kind::kAdam;
    c.lr = o.lr();
    c.beta1 = std::get<0>(o.betas());
    c.beta2 = std::get<1>(o.betas());
    c.eps = o.eps();
    c.weight_decay = o.weight_decay();
  } else if (dynamic_cast<torch::optim::SGD*>(&optimizer)) {
    auto& o = static_cast<torch::optim::SGDOptions&>(options);
    c.kind = cps::AsyncOptimizerConfig::Kind::kSgd;
    c.lr = o.lr();
    c.momentum = o.momentum();
    c.dampening = o.dampening();
    c.nesterov = o.nesterov();
    c.weight_decay = o.weight_decay();
  } else {
    throw InvalidArgument(
        "ps async mode: the servers run torch::optim::SGD or Adam; this optimizer is neither");
  }
  if (std::string bad = c.Invalid(); !bad.empty()) {
    throw InvalidArgument("ps async mode: the optimizer's " + bad);
  }
  return c;
}

float* Floats(const at::Tensor& t) { return t.data_ptr<float>(); }

// A fingerprint of parameters and optimizer state for the logs (equal state, equal sums), so
// that a resume can be checked against the snapshot it restored.
double Checksum(const std::vector<float>& v) {
  double sum = 0;
  for (size_t i = 0; i < v.size(); ++i)
    sum += static_cast<double>(v[i]) * static_cast<double>(i % 7 + 1);
  return sum;
}

std::string Describe(const std::vector<float>& params, const cps::AsyncState& state) {
  return fmt::format(
      "parameter checksum {:.17g}, optimizer state checksum {:.17g}/{:.17g} ({} "
      "optimizer steps)",
      Checksum(params), Checksum(state.slot1), Checksum(state.slot2), state.opt_steps);
}

}  // namespace

PsAsyncTraining::PsAsyncTraining(std::shared_ptr<ProcessGroup> pg,
                                 std::shared_ptr<torch::optim::Optimizer> optimizer, int staleness,
                                 bool pipeline)
    : pg_(std::move(pg)),
      optimizer_(std::move(optimizer)),
      staleness_(staleness),
      pipeline_(pipeline && staleness != 0) {
  if (!pg_ || !optimizer_) throw InvalidArgument("ps async mode: null process group or optimizer");
  config_ = std::make_unique<cps::AsyncOptimizerConfig>(ConfigOf(*optimizer_));
  for (const at::Tensor& p : optimizer_->param_groups()[0].params()) {
    if (!p.device().is_cpu() || p.scalar_type() != at::kFloat || !p.is_contiguous()) {
      throw InvalidArgument(
          "ps async mode trains contiguous CPU float32 parameters; move the model to the CPU "
          "in float32");
    }
    params_.push_back(p);
    numel_ += static_cast<size_t>(p.numel());
    // Sized here, never again: a push borrows it for every parameter without a gradient.
    zeros_.resize(std::max(zeros_.size(), static_cast<size_t>(p.numel())), 0.0f);
  }
  flat_.resize(numel_);
  if (pipeline_) grad_.resize(numel_);
}

PsAsyncTraining::~PsAsyncTraining() = default;

void PsAsyncTraining::CopyIntoModel() {
  size_t at = 0;
  for (const auto& [p, n] : ModelRuns()) {
    std::memcpy(p, flat_.data() + at, n * sizeof(float));
    at += n;
  }
}

void PsAsyncTraining::CopyFromModel() {
  size_t at = 0;
  for (const auto& [p, n] : ModelRuns()) {
    std::memcpy(flat_.data() + at, p, n * sizeof(float));
    at += n;
  }
}

cps::AsyncState PsAsyncTraining::LocalOptimizerState() const {
  // The optimizer's state (a resumed snapshot's), when every parameter has one; else none.
  cps::AsyncState state;
  size_t at = 0;
  for (const at::Tensor& p : params_) {
    auto it = optimizer_->state().find(ParamStateKey(p));
    if (it == optimizer_->state().end()) return {};
    std::vector<at::Tensor> fields;  // slot1, slot2 in ForEachOptimizerField's order
    ForEachOptimizerField(*it->second, [&](const char* field, const at::Tensor& t) {
      if (std::strcmp(field, "step") == 0) {
        state.opt_steps = t.item<int64_t>();
      } else {
        fields.push_back(t.to(at::kFloat).contiguous());
      }
    });
    if (fields.empty()) return {};
    const auto n = static_cast<size_t>(p.numel());
    for (size_t f = 0; f < fields.size() && f < 2; ++f) {
      auto& slot = f == 0 ? state.slot1 : state.slot2;
      slot.resize(numel_);
      std::memcpy(slot.data() + at, Floats(fields[f]), n * sizeof(float));
    }
    at += n;
  }
  return state;
}

void PsAsyncTraining::Start(int64_t step) {
  // A random epoch from rank 0: the calls of an earlier start of this job are refused.
  int64_t epoch = 0;
  if (pg_->Rank() == 0)
    epoch = static_cast<int64_t>(std::random_device{}() | (uint64_t{std::random_device{}()} << 32));
  if (pg_->Size() > 1) {
    pg_->comm()
        .Broadcast(collectives::TensorView(&epoch, 1, collectives::DType::kInt64), 0)
        ->Wait();
  }
  cps::AsyncJob job;
  job.job = env::kRunId.Str("default");
  job.epoch = static_cast<uint64_t>(epoch);
  job.rank = pg_->Rank();
  job.world = pg_->Size();
  job.staleness = staleness_;
  const auto timeout =
      std::chrono::milliseconds(static_cast<int64_t>(1000 * env::kTimeout.Seconds(300)));
  client_ = std::make_unique<cps::AsyncClient>(cps::PsOptions::FromEnv(), job, numel_, timeout);
  next_step_ = step;
  if (pg_->Rank() == 0) {
    CopyFromModel();
    const cps::AsyncState state = LocalOptimizerState();
    client_->Init(*config_, step, flat_.data(), state);
    COHORT_INFO(kRuntime,
                "ps async: {} parameters in {} partitions on the servers, {}; pushed "
                "at step {}: {}",
                numel_, client_->Partitions(),
                staleness_ < 0 ? std::string("ASP") : fmt::format("SSP staleness {}", staleness_),
                step, Describe(flat_, state));
  }
  pg_->Barrier();
  client_->Pull(step - 1, flat_.data());
  CopyIntoModel();
}

void PsAsyncTraining::CopyGradients(float* to) {
  size_t at = 0;
  for (const auto& [g, n] : GradientRuns()) {
    std::memcpy(to + at, g, n * sizeof(float));
    at += n;
  }
}

cps::FloatRuns PsAsyncTraining::ModelRuns() const {
  cps::FloatRuns runs;
  for (const at::Tensor& p : params_) runs.emplace_back(Floats(p), static_cast<size_t>(p.numel()));
  return runs;
}

cps::ConstFloatRuns PsAsyncTraining::GradientRuns() {
  grads_.clear();
  cps::ConstFloatRuns runs;
  for (const at::Tensor& p : params_) {
    const auto n = static_cast<size_t>(p.numel());
    if (!p.grad().defined()) {
      runs.emplace_back(zeros_.data(), n);
      continue;
    }
    grads_.push_back(p.grad().to(at::kFloat).contiguous());  // the gradient itself, usually
    runs.emplace_back(Floats(grads_.back()), n);
  }
  return runs;
}

void PsAsyncTraining::Collect() {
  const cps::AsyncClocks clocks = client_->FinishPush(ModelRuns());
  max_spread_ = std::max(max_spread_, clocks.max - clocks.min);
}

void PsAsyncTraining::Step() {
  if (!client_) throw InvalidArgument("ps async mode: Step before Start");
  // Pipelined: the previous step's answer, taken before this push (a rank's pushes reach the
  // servers in order), and the gradients copied, the push being out past this call.
  if (client_->Pushing()) Collect();
  if (pipeline_) {
    CopyGradients(grad_.data());
    client_->StartPush(next_step_, grad_.data(), /*ahead=*/1);
  } else {
    client_->StartPush(next_step_, GradientRuns(), /*ahead=*/0);
  }
  ++next_step_;
  if (!pipeline_) Collect();
}

void PsAsyncTraining::Drain() {
  if (client_ && client_->Pushing()) Collect();
}

void PsAsyncTraining::PullFinal() {
  Drain();
  pg_->Barrier();  // every rank's last push was answered
  client_->Pull(next_step_ - 1, flat_.data());
  CopyIntoModel();
}

void PsAsyncTraining::FetchState() {
  if (!client_) return;
  Drain();
  pg_->Barrier();  // every rank's push of step next_step_ - 1 was answered
  if (pg_->Rank() == 0) {
    cps::AsyncState state;
    client_->Pull(next_step_ - 1, flat_.data(), &state);
    CopyIntoModel();
    COHORT_INFO(kRuntime, "ps async: the servers' state at step {}: {}", next_step_,
                Describe(flat_, state));
    size_t at = 0;
    const bool adam = config_->kind == cps::AsyncOptimizerConfig::Kind::kAdam;
    for (const at::Tensor& p : params_) {
      const auto n = static_cast<int64_t>(p.numel());
      auto slice = [&](const std::vector<float>& slot) {
        return torch::from_blob(const_cast<float*>(slot.data()) + at, p.sizes(), at::kFloat)
            .clone();
      };
      const std::string key = ParamStateKey(p);
      if (adam && !state.slot1.empty()) {
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step(state.opt_steps);
        s->exp_avg(slice(state.slot1));
        s->exp_avg_sq(slice(state.slot2));
        optimizer_->state()[key] = std::move(s);
      } else if (!adam && !state.slot1.empty()) {
        auto s = std::make_unique<torch::optim::SGDParamState>();
        s->momentum_buffer(slice(state.slot1));
        optimizer_->state()[key] = std::move(s);
      }
      at += static_cast<size_t>(n);
    }
  }
  pg_->Barrier();  // nobody pushes the next step before rank 0 has the state
}

int64_t PsAsyncTraining::TakeMaxSpread() { return std::exchange(max_spread_, 0); }

}  // namespace cohort::runtime
