// The torch side of sharded checkpoints (checkpoint/layout.h): captures this rank's slices of
// a model-parallel module and its optimizer state, and restores them from a snapshot saved at
// any other layout. Parameters keep their GLOBAL names (the unsharded model's), and optimizer
// state is keyed by parameter name, not index, because the parameter set of a rank differs
// between layouts. Names in the shard:
//   model/<name>                       this rank's slice of a parameter or buffer
//   optimizer/<name>/<field>           SGD momentum_buffer; Adam/AdamW exp_avg, exp_avg_sq,
//                                      max_exp_avg_sq (sliced like the parameter) and step
//   rng/cpu                            every rank, its own
// and attributes sampler_epoch, sampler_position, sampler_seed, parameters (this rank's
// parameter names in order, for consolidation).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/host_buffer_pool.h"
#include "checkpoint/reshard.h"
#include "checkpoint/shard.h"
#include "runtime/torch_fwd.h"
#include "runtime/trainer.h"

namespace cohort::runtime {

// A local parameter that is a slice of a larger global one: its box starts at offsets of
// global_shape, and its size is the local tensor's shape. Parameters not listed are whole.
struct ParamSharding {
  std::string name;
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offsets;
};

// The ParamShardings of the tensor-parallel layers under module (TensorParallelShardings in
// runtime/tensor_parallel.h), under the module's own parameter names.
std::vector<ParamSharding> TensorParallelParamShardings(const torch::nn::Module& module);

// Copies this rank's state to host memory. with_model: data-parallel rank 0 of its (pp, tp)
// position (replicas save nothing but their RNG). Throws InvalidArgument for an optimizer other
// than SGD, Adam or AdamW, or a sharding that names no parameter.
checkpoint::Shard CaptureShardedState(const torch::nn::Module& module,
                                      const torch::optim::Optimizer& optimizer,
                                      const TrainerState& state,
                                      const std::vector<ParamSharding>& shardings, bool with_model,
                                      checkpoint::HostBufferPool* pool = nullptr);

// Restores module parameters, buffers and optimizer state for this rank's shardings from
// reader, and this rank's RNG when the saving job had the same rank. Throws InvalidArgument in
// one line when a tensor is missing or its global shape differs, DataLoss on damage.
TrainerState RestoreShardedState(checkpoint::ShardedReader& reader, int rank,
                                 torch::nn::Module& module, torch::optim::Optimizer& optimizer,
                                 const std::vector<ParamSharding>& shardings);

}  // namespace cohort::runtime
