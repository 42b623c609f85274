// Copies a training job's state into a checkpoint shard (phase one of a save: the only part
// training waits for) and back after a load. Names in the shard:
//   model/<parameter or buffer name>             rank 0 only (data parallel: replicas are equal)
//   optimizer/<k>/<field>                        rank 0 only; k counts parameters across groups
//                                                (SGD momentum_buffer; Adam/AdamW exp_avg,
//                                                exp_avg_sq, max_exp_avg_sq, step); any other
//                                                optimizer: optimizer/archive (torch's format)
//   rng/cpu                                      every rank (its own generator)
// and attributes epoch, step, sampler_epoch, sampler_position, sampler_seed, world_size.
#pragma once

#include "checkpoint/host_buffer_pool.h"
#include "checkpoint/shard.h"
#include "runtime/torch_fwd.h"
#include "runtime/trainer.h"

namespace cohort::runtime {

// Copies the state to host memory. with_model: rank 0 of a data-parallel job. pool (optional)
// supplies warm buffers: fresh memory costs page faults (about 7 s per GiB on these VMs, against
// 0.24 s into pooled buffers).
checkpoint::Shard CaptureState(const torch::nn::Module& module,
                               const torch::optim::Optimizer& optimizer, const TrainerState& state,
                               int world_size, bool with_model,
                               checkpoint::HostBufferPool* pool = nullptr);

// Restores model and optimizer from model_shard (rank 0's shard) and, when own_shard is given
// (this rank existed in the saving job), this rank's RNG. Returns the trainer state to resume
// from. Throws DataLoss naming the tensor when one is missing or has another shape or dtype.
TrainerState RestoreState(const checkpoint::Shard& model_shard, const checkpoint::Shard* own_shard,
                          torch::nn::Module& module, torch::optim::Optimizer& optimizer);

}  // namespace cohort::runtime
