// Export for serving: a TorchScript archive (model.pt) plus the signature Triton's config needs.
//   - a torch::jit::Module (or a TorchScript file) is saved as is;
//   - a C++ torch::nn::Module, or the model/ tensors of a checkpoint snapshot, is copied into a
//     TorchScript skeleton of the same architecture (a file scripted from Python, e.g.
//     examples/fashion_mnist/skeleton.py): every parameter and buffer by name, and a name
//     either side lacks, or a shape that differs, is one error naming it.
// The signature comes from running forward() on a probe batch of the example input's shape.
// The header stays free of libtorch (runtime/torch_fwd.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/torch_fwd.h"
#include "serving/triton_config.h"

namespace cohort::checkpoint {
struct Shard;
}  // namespace cohort::checkpoint

namespace cohort::serving {

struct ExportOptions {
  // One sample's shape, without the batch dimension (Fashion-MNIST: 1,28,28).
  std::vector<int64_t> example_input_shape = {1, 28, 28};
  // torch's name of the input's dtype: float32, float64, float16, bfloat16, int32, int64, uint8.
  std::string example_input_dtype = "float32";
  int64_t probe_batch = 2;  // forward() runs once on this many zero samples
};

struct ExportedModel {
  std::string model_pt;      // the TorchScript archive
  TensorSpec input, output;  // INPUT__0 / OUTPUT__0, dims without the batch dimension
};

// Copies module's parameters and buffers into the skeleton loaded from skeleton_path.
ExportedModel ExportModule(const torch::nn::Module& module, const std::string& skeleton_path,
                           const ExportOptions& options = {});
// The same from a snapshot's rank-0 shard ("model/<name>" tensors). A model-parallel snapshot's
// sliced tensors are refused (consolidate it first).
ExportedModel ExportShard(const checkpoint::Shard& shard, const std::string& skeleton_path,
                          const ExportOptions& options = {});
// A scripted module, saved as is (probed on a copy, so its training flag is left alone).
ExportedModel ExportScripted(const torch::jit::Module& module, const ExportOptions& options = {});
// A TorchScript file: its bytes unchanged.
ExportedModel ExportScriptedFile(const std::string& path, const ExportOptions& options = {});

}  // namespace cohort::serving
