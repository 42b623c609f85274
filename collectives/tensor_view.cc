#include "collectives/tensor_view.h"

#include <fmt/format.h>

#include "common/error.h"

namespace cohort::collectives {

std::string Device::ToString() const {
  if (type == DeviceType::kCPU) return "cpu";
  return fmt::format("cuda:{}", index);
}

size_t ElementSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
      return 8;
    case DType::kFloat16:
      return 2;
    case DType::kBFloat16:
      return 2;
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
      return 1;
  }
  throw Internal("ElementSize: unknown dtype");
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "f32";
    case DType::kFloat64:
      return "f64";
    case DType::kFloat16:
      return "f16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kInt32:
      return "i32";
    case DType::kInt64:
      return "i64";
    case DType::kUInt8:
      return "u8";
  }
  return "?";
}

DType ParseDType(const std::string& name) {
  struct Alias {
    const char* name;
    DType dtype;
  };
  static const Alias kAliases[] = {
      {"f32", DType::kFloat32},   {"float32", DType::kFloat32},   {"float", DType::kFloat32},
      {"f64", DType::kFloat64},   {"float64", DType::kFloat64},   {"double", DType::kFloat64},
      {"f16", DType::kFloat16},   {"float16", DType::kFloat16},   {"half", DType::kFloat16},
      {"bf16", DType::kBFloat16}, {"bfloat16", DType::kBFloat16}, {"i32", DType::kInt32},
      {"int32", DType::kInt32},   {"int", DType::kInt32},         {"i64", DType::kInt64},
      {"int64", DType::kInt64},   {"long", DType::kInt64},        {"u8", DType::kUInt8},
      {"uint8", DType::kUInt8},   {"byte", DType::kUInt8}};
  for (const auto& a : kAliases) {
    if (name == a.name) return a.dtype;
  }
  throw InvalidArgument(
      fmt::format("unknown dtype '{}'; use one of f32 f64 f16 bf16 i32 i64 u8", name));
}

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

TensorView TensorView::Slice(size_t offset, size_t n) const {
  if (offset > count || n > count - offset) {
    throw InvalidArgument(fmt::format("slice [{}, {}) is outside a tensor of {} elements", offset,
                                      offset + n, count));
  }
  TensorView v = *this;
  v.data = static_cast<char*>(data) + offset * ElementSize(dtype);
  v.count = n;
  return v;
}

std::string TensorView::ToString() const {
  return fmt::format("{}[{}] {}", DTypeName(dtype), count, device.ToString());
}

}  // namespace cohort::collectives
