// The pieces both checkpoint adapters (train_state.cc: data parallel, sharded_state.cc: model
// parallel) copy state with, so that the dtype mapping, the RNG, the sampler attributes and the
// optimizer's fields (SGD momentum_buffer; Adam/AdamW exp_avg, exp_avg_sq, max_exp_avg_sq, step)
// are spelled in one place. Internal to runtime/.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "checkpoint/host_buffer_pool.h"
#include "checkpoint/shard.h"
#include "runtime/torch_fwd.h"
#include "runtime/trainer.h"

namespace torch::optim {
class OptimizerParamState;
}  // namespace torch::optim

namespace cohort::runtime {

// A host copy of t under name (phase one of a save), into a pooled buffer when pool is given.
checkpoint::HostTensor HostCopy(const std::string& name, const at::Tensor& t,
                                checkpoint::HostBufferPool* pool);
// A CPU tensor over h's bytes, without a copy: valid while h's bytes are.
at::Tensor HostView(const checkpoint::HostTensor& h);

// The key of p's entry in Optimizer::state().
std::string ParamStateKey(const at::Tensor& p);

// Calls fn(field, tensor) for each field of an SGD, Adam or AdamW parameter state (an SGD one
// without momentum has none; step is a 0-d int64 tensor). Returns false, calling nothing, for
// any other optimizer's state.
bool ForEachOptimizerField(const torch::optim::OptimizerParamState& state,
                           const std::function<void(const char* field, const at::Tensor&)>& fn);

// Where a restore reads one parameter's saved fields from.
struct OptimizerFields {
  std::function<bool(const char* field)> has;
  // A fresh tensor shaped like the parameter (checked against it).
  std::function<at::Tensor(const char* field)> tensor;
  std::function<int64_t(const char* field)> scalar;
};
// The state of one parameter of opt (SGD, Adam or AdamW) from its saved fields, or nullptr when
// none were saved (the parameter was never stepped, or SGD ran without momentum).
std::unique_ptr<torch::optim::OptimizerParamState> ReadOptimizerState(
    const torch::optim::Optimizer& opt, const OptimizerFields& fields);

// This process's CPU generator state as "rng/cpu", and back.
checkpoint::HostTensor CaptureRng(checkpoint::HostBufferPool* pool);
void RestoreRng(const checkpoint::HostTensor& rng);

// The sampler's position as the shard attributes sampler_epoch, sampler_position, sampler_seed,
// and the tracking run (tracking_run_id) when there is one.
void PutSamplerAttributes(const TrainerState& state, checkpoint::Shard& shard);
// A text attribute of shard, "" when absent (or not text).
std::string TextAttribute(const checkpoint::Shard& shard, const std::string& name);

}  // namespace cohort::runtime
