#include "serving/export.h"

#include <fmt/format.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/nn/module.h>
#include <torch/script.h>

#include <fstream>
#include <map>
#include <sstream>

#include "checkpoint/shard.h"
#include "common/error.h"
#include "runtime/state_tensors.h"

namespace cohort::serving {
namespace {

using Named = std::map<std::string, at::Tensor>;

std::string Shape(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

// The first line of a libtorch error, without its C++ backtrace.
std::string TorchWhat(const c10::Error& e) {
  std::string what = e.what_without_backtrace();
  return what.substr(0, what.find('\n'));
}

// The TorchScript interpreter's errors carry a Python-like traceback; the cause is the last line.
std::string LastLine(const std::string& text) {
  size_t end = text.find_last_not_of(" \n");
  if (end == std::string::npos) return text;
  size_t begin = text.rfind('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1, end + 1 - (begin + 1));
}

torch::jit::Module LoadScripted(const std::string& path) {
  try {
    return torch::jit::load(path, at::kCPU);
  } catch (const c10::Error& e) {
    throw InvalidArgument(fmt::format(
        "{} is not a TorchScript archive torch.jit.load can read ({}); script the model with "
        "torch.jit.script(...).save()",
        path, TorchWhat(e)));
  }
}

std::string TritonType(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "TYPE_FP32";
    case at::kDouble:
      return "TYPE_FP64";
    case at::kHalf:
      return "TYPE_FP16";
    case at::kBFloat16:
      return "TYPE_BF16";
    case at::kInt:
      return "TYPE_INT32";
    case at::kLong:
      return "TYPE_INT64";
    case at::kShort:
      return "TYPE_INT16";
    case at::kChar:
      return "TYPE_INT8";
    case at::kByte:
      return "TYPE_UINT8";
    case at::kBool:
      return "TYPE_BOOL";
    default:
      throw InvalidArgument(fmt::format("a {} tensor has no Triton data type", c10::toString(t)));
  }
}

at::ScalarType InputType(const std::string& name) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"float32", at::kFloat},     {"float64", at::kDouble}, {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int32", at::kInt},      {"int64", at::kLong},
      {"uint8", at::kByte}};
  auto it = kTypes.find(name);
  if (it == kTypes.end())
    throw InvalidArgument(fmt::format(
        "--example-input-dtype '{}' is not one of float32, float64, float16, bfloat16, int32, "
        "int64, uint8",
        name));
  return it->second;
}

// Copies every source tensor into the skeleton's parameter or buffer of the same name. The two
// name sets must be equal and each pair's shapes too: a name only one side has would otherwise
// leave a skeleton value untrained or drop a trained one.
void CopyByName(const Named& source, torch::jit::Module& skeleton, const std::string& path,
                const std::string& from) {
  Named targets;
  for (const auto& p : skeleton.named_parameters(/*recurse=*/true)) targets[p.name] = p.value;
  for (const auto& b : skeleton.named_buffers(/*recurse=*/true)) targets[b.name] = b.value;
  for (const auto& [name, target] : targets) {
    auto it = source.find(name);
    if (it == source.end())
      throw InvalidArgument(fmt::format(
          "export: skeleton {} has '{}' {} but {} has no tensor of that name; the skeleton must "
          "have the trained model's architecture and names",
          path, name, Shape(target), from));
    if (!it->second.sizes().equals(target.sizes()))
      throw InvalidArgument(fmt::format(
          "export: '{}' is {} in {} but {} in skeleton {}; the skeleton must have the trained "
          "model's architecture",
          name, Shape(it->second), from, Shape(target), path));
  }
  for (const auto& [name, tensor] : source) {
    if (!targets.count(name))
      throw InvalidArgument(fmt::format(
          "export: {} has '{}' {} but skeleton {} has no parameter or buffer of that name; the "
          "skeleton must have the trained model's architecture and names",
          from, name, Shape(tensor), path));
  }
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(source.at(name).to(at::kCPU));
}

[[noreturn]] void ForwardFailed(const at::Tensor& x, const std::string& why) {
  throw InvalidArgument(fmt::format(
      "export: forward() fails on an example input of shape {} ({}); pass the shape of one "
      "sample without the batch dimension as --example-input-shape",
      Shape(x), why));
}

// Runs forward() on a zero batch for the output's type and shape.
ExportedModel Probe(torch::jit::Module module, const ExportOptions& o) {
  std::vector<int64_t> shape = {o.probe_batch};
  shape.insert(shape.end(), o.example_input_shape.begin(), o.example_input_shape.end());
  const at::Tensor x =
      at::zeros(shape, at::TensorOptions().dtype(InputType(o.example_input_dtype)));
  module.eval();
  at::NoGradGuard no_grad;
  c10::IValue out;
  try {
    out = module.forward({x});
  } catch (const c10::Error& e) {
    ForwardFailed(x, TorchWhat(e));
  } catch (const std::exception& e) {  // torch::jit::JITException: a scripted forward() threw
    ForwardFailed(x, LastLine(e.what()));
  }
  if (!out.isTensor())
    throw InvalidArgument(fmt::format(
        "export: forward() returns a {}, not one tensor (Triton's OUTPUT__0)", out.tagKind()));
  const at::Tensor y = out.toTensor();
  if (y.dim() < 1 || y.size(0) != o.probe_batch)
    throw InvalidArgument(fmt::format(
        "export: forward() on a batch of {} returns {}, whose first dimension is not the batch",
        o.probe_batch, Shape(y)));
  ExportedModel m;
  m.input = {"INPUT__0", TritonType(x.scalar_type()), o.example_input_shape};
  m.output = {"OUTPUT__0", TritonType(y.scalar_type()),
              std::vector<int64_t>(y.sizes().begin() + 1, y.sizes().end())};
  return m;
}

std::string Save(const torch::jit::Module& module) {
  std::ostringstream out;
  module.save(out);
  return out.str();
}

ExportedModel FillSkeleton(const Named& source, const std::string& skeleton_path,
                           const std::string& from, const ExportOptions& o) {
  torch::jit::Module skeleton = LoadScripted(skeleton_path);
  CopyByName(source, skeleton, skeleton_path, from);
  skeleton.eval();
  ExportedModel m = Probe(skeleton, o);
  m.model_pt = Save(skeleton);
  return m;
}

}  // namespace

ExportedModel ExportModule(const torch::nn::Module& module, const std::string& skeleton_path,
                           const ExportOptions& o) {
  Named source;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) source[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) source[b.key()] = b.value();
  return FillSkeleton(source, skeleton_path, "the C++ module", o);
}

ExportedModel ExportShard(const checkpoint::Shard& shard, const std::string& skeleton_path,
                          const ExportOptions& o) {
  const std::string prefix = "model/";
  Named source;
  for (const auto& t : shard.tensors) {
    if (t.name().rfind(prefix, 0) != 0) continue;
    if (shard.slices.count(t.name()))
      throw InvalidArgument(fmt::format(
          "export: '{}' is one slice of a model-parallel snapshot; consolidate the snapshot "
          "first (cohort checkpoint consolidate)",
          t.name()));
    // A view of the loaded bytes: only read, by copy_() into the skeleton.
    source[t.name().substr(prefix.size())] = runtime::HostView(t);
  }
  if (source.empty())
    throw InvalidArgument(
        "export: the snapshot's rank-0 shard has no model/ tensors; was it saved by the Trainer?");
  return FillSkeleton(source, skeleton_path, "the snapshot", o);
}

ExportedModel ExportScripted(const torch::jit::Module& module, const ExportOptions& o) {
  ExportedModel m = Probe(module.deepcopy(), o);
  m.model_pt = Save(module);
  return m;
}

ExportedModel ExportScriptedFile(const std::string& path, const ExportOptions& o) {
  ExportedModel m = Probe(LoadScripted(path), o);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!in.good() && !in.eof()) throw InvalidArgument(fmt::format("cannot read {}", path));
  m.model_pt = bytes.str();
  return m;
}

}  // namespace cohort::serving
