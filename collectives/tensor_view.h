// TensorView: what collectives operate on. A pointer, an element count, a dtype and a device;
// it owns nothing. runtime/ adapts torch::Tensor to it, so this layer never includes libtorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cohort::collectives {

enum class DType : uint8_t { kFloat32, kFloat64, kFloat16, kBFloat16, kInt32, kInt64, kUInt8 };
inline constexpr DType kAllDTypes[] = {DType::kFloat32,  DType::kFloat64, DType::kFloat16,
                                       DType::kBFloat16, DType::kInt32,   DType::kInt64,
                                       DType::kUInt8};

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = -1;  // CUDA device ordinal; -1 for CPU
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string ToString() const;
};

// Bytes per element.
size_t ElementSize(DType dtype);
// Short name: "f32", "f64", "f16", "bf16", "i32", "i64", "u8".
const char* DTypeName(DType dtype);
// Parses a DTypeName() or torch-style name ("float32", "half", ...). Throws InvalidArgument.
DType ParseDType(const std::string& name);
bool IsFloatingPoint(DType dtype);

struct TensorView {
  void* data = nullptr;
  size_t count = 0;  // elements, not bytes
  DType dtype = DType::kFloat32;
  Device device;

  TensorView() = default;
  TensorView(void* d, size_t n, DType t, Device dev = {})
      : data(d), count(n), dtype(t), device(dev) {}

  size_t bytes() const { return count * ElementSize(dtype); }
  // Elements [offset, offset + n) of this view. Throws InvalidArgument when out of range.
  TensorView Slice(size_t offset, size_t n) const;
  // "f32[1031] cpu".
  std::string ToString() const;
};

// Wraps a typed host array.
template <typename T>
TensorView ViewOf(T* data, size_t count, DType dtype) {
  return TensorView(static_cast<void*>(data), count, dtype);
}

}  // namespace cohort::collectives
