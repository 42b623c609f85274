#include "serving/triton_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "common/error.h"

namespace cohort::serving {
namespace {

// Triton's DataType enum (model_config.proto), without TYPE_INVALID.
constexpr const char* kDataTypes[] = {"TYPE_BOOL",   "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32",
                                      "TYPE_UINT64", "TYPE_INT8",  "TYPE_INT16",  "TYPE_INT32",
                                      "TYPE_INT64",  "TYPE_FP16",  "TYPE_FP32",   "TYPE_FP64",
                                      "TYPE_STRING", "TYPE_BF16"};

// Protobuf text format string literal (C escapes).
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void CheckTensor(const TensorSpec& t, const char* field) {
  if (t.name.empty())
    throw InvalidArgument(
        fmt::format("config.pbtxt: an {} has no name (Triton's PyTorch "
                    "backend expects INPUT__<i> / OUTPUT__<i>)",
                    field));
  if (!IsTritonDataType(t.data_type))
    throw InvalidArgument(
        fmt::format("config.pbtxt: {} '{}' has data_type '{}', not one of Triton's (TYPE_FP32, "
                    "TYPE_INT64, ...)",
                    field, t.name, t.data_type));
  for (int64_t d : t.dims) {
    if (d < -1)
      throw InvalidArgument(fmt::format(
          "config.pbtxt: {} '{}' has dimension {}; use a size >= 1, or -1 for a variable one",
          field, t.name, d));
  }
}

void AppendTensors(std::string& out, const char* field, const std::vector<TensorSpec>& tensors) {
  if (tensors.empty())
    throw InvalidArgument(fmt::format("config.pbtxt: the model needs at least one {}", field));
  out += fmt::format("{} [\n", field);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    CheckTensor(t, field);
    out += fmt::format("  {{\n    name: {}\n    data_type: {}\n    dims: [ {} ]\n  }}{}\n",
                       Quoted(t.name), t.data_type, fmt::join(t.dims, ", "),
                       i + 1 < tensors.size() ? "," : "");
  }
  out += "]\n";
}

}  // namespace

bool IsTritonDataType(const std::string& name) {
  return std::find(std::begin(kDataTypes), std::end(kDataTypes), name) != std::end(kDataTypes);
}

void SetSampleIo(TritonConfig& config, TensorSpec input, TensorSpec output) {
  if (config.max_batch_size == 0) {
    input.dims.insert(input.dims.begin(), -1);
    output.dims.insert(output.dims.begin(), -1);
  }
  config.inputs = {std::move(input)};
  config.outputs = {std::move(output)};
}

InstanceKind ParseInstanceKind(const std::string& text) {
  std::string lower = text;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "gpu" || lower == "kind_gpu") return InstanceKind::kGpu;
  if (lower == "cpu" || lower == "kind_cpu") return InstanceKind::kCpu;
  throw InvalidArgument(fmt::format(
      "instance kind '{}' is neither gpu nor cpu (Triton's KIND_GPU / KIND_CPU)", text));
}

std::string RenderConfigPbtxt(const TritonConfig& c) {
  if (c.name.empty()) throw InvalidArgument("config.pbtxt: the model needs a name");
  if (c.max_batch_size < 0)
    throw InvalidArgument(fmt::format(
        "config.pbtxt: max_batch_size {} is negative; use 0 (no batching) or the largest batch",
        c.max_batch_size));
  if (c.instance_count < 1)
    throw InvalidArgument(
        fmt::format("config.pbtxt: instance_group count {} must be at least 1", c.instance_count));
  if (c.dynamic_batching && c.max_batch_size == 0)
    throw InvalidArgument(
        "config.pbtxt: dynamic_batching needs max_batch_size > 0 (Triton refuses it otherwise)");
  std::string out = fmt::format("name: {}\nplatform: \"pytorch_libtorch\"\nmax_batch_size: {}\n",
                                Quoted(c.name), c.max_batch_size);
  AppendTensors(out, "input", c.inputs);
  AppendTensors(out, "output", c.outputs);
  out += fmt::format("instance_group [\n  {{\n    count: {}\n    kind: {}\n  }}\n]\n",
                     c.instance_count,
                     c.instance_kind == InstanceKind::kGpu ? "KIND_GPU" : "KIND_CPU");
  if (c.dynamic_batching) {
    out += "dynamic_batching {\n";
    for (int size : c.dynamic_batching->preferred_batch_size)
      out += fmt::format("  preferred_batch_size: {}\n", size);
    out += fmt::format("  max_queue_delay_microseconds: {}\n}}\n",
                       c.dynamic_batching->max_queue_delay_microseconds);
  }
  return out;
}

}  // namespace cohort::serving
