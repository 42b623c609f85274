// Triton's model configuration (config.pbtxt) for a TorchScript model: only fields of Triton's
// ModelConfig message (model_config.proto), written in protobuf text format. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cohort::serving {

// One input or output (ModelInput / ModelOutput). The PyTorch backend binds tensors by
// position through the names INPUT__<i> / OUTPUT__<i>.
struct TensorSpec {
  std::string name;           // "INPUT__0"
  std::string data_type;      // Triton's DataType enum: "TYPE_FP32", "TYPE_INT64", ...
  std::vector<int64_t> dims;  // without the batch dimension when max_batch_size > 0
};

enum class InstanceKind { kGpu, kCpu };

// ModelDynamicBatching.
struct DynamicBatching {
  std::vector<int> preferred_batch_size;  // empty: Triton picks
  uint64_t max_queue_delay_microseconds = 0;
};

struct TritonConfig {
  std::string name;         // must equal the model's folder name in the repository
  int max_batch_size = 64;  // 0: the model takes no batch dimension from Triton
  std::vector<TensorSpec> inputs, outputs;
  InstanceKind instance_kind = InstanceKind::kCpu;
  int instance_count = 1;
  std::optional<DynamicBatching> dynamic_batching;
};

// True for the names of Triton's DataType enum (TYPE_BOOL ... TYPE_BF16), TYPE_INVALID excluded.
bool IsTritonDataType(const std::string& name);

// config.pbtxt with platform "pytorch_libtorch". Throws InvalidArgument (saying which field and
// how to fix it) for an empty name or tensor list, an unknown data type, a dimension < -1, a
// negative max_batch_size or an instance_count < 1.
std::string RenderConfigPbtxt(const TritonConfig& config);

// Sets the one input and the one output from per-sample dims (no batch dimension): with
// max_batch_size 0 Triton passes whole shapes, so a leading -1 (any batch) is added.
void SetSampleIo(TritonConfig& config, TensorSpec input, TensorSpec output);

// "gpu" / "cpu" (any case) -> kind; throws InvalidArgument for anything else.
InstanceKind ParseInstanceKind(const std::string& text);

}  // namespace cohort::serving
