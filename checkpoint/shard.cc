#include "checkpoint/shard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/error.h"

namespace cohort::checkpoint {
namespace {

size_t ShapeElements(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

// 64-byte aligned, so that loaders and SIMD copies see the alignment torch's allocator gives.
std::shared_ptr<void> AlignedBytes(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (p == nullptr) throw Unavailable(fmt::format("out of host memory allocating {} bytes", bytes));
  return std::shared_ptr<void>(p, std::free);
}

}  // namespace

void HostTensor::Validate(const std::string& name, const std::vector<int64_t>& shape) {
  const bool bad_name = name.empty() || name.front() == '/' || name.back() == '/' ||
                        name.find("//") != std::string::npos ||
                        ("/" + name + "/").find("/./") != std::string::npos ||
                        ("/" + name + "/").find("/../") != std::string::npos ||
                        name.rfind("meta/", 0) == 0 || name == "meta";
  if (bad_name) {
    throw InvalidArgument(fmt::format(
        "bad tensor name '{}': use '/'-separated parts like 'model/fc1.weight', without empty, "
        "'.' or '..' parts, and not under 'meta' (reserved for metadata)",
        name));
  }
  double elements = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      throw InvalidArgument(
          fmt::format("tensor '{}': negative dimension {} in its shape", name, d));
    }
    elements *= static_cast<double>(d);
  }
  if (elements > static_cast<double>(std::numeric_limits<int64_t>::max() / 8)) {
    throw InvalidArgument(fmt::format("tensor '{}': shape too large", name));
  }
}

HostTensor HostTensor::Allocate(std::string name, DType dtype, std::vector<int64_t> shape) {
  Validate(name, shape);
  HostTensor t;
  t.name_ = std::move(name);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  auto bytes = AlignedBytes(t.nbytes());
  t.data_ = bytes.get();
  t.owner_ = std::move(bytes);
  t.writable_ = true;
  return t;
}

HostTensor HostTensor::Adopt(std::string name, DType dtype, std::vector<int64_t> shape,
                             std::shared_ptr<void> bytes) {
  Validate(name, shape);
  HostTensor t;
  t.name_ = std::move(name);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  if (!bytes && t.nbytes() > 0) {
    throw InvalidArgument(fmt::format("tensor '{}': no buffer for {} bytes", t.name_, t.nbytes()));
  }
  t.data_ = bytes.get();
  t.owner_ = std::move(bytes);
  t.writable_ = true;
  return t;
}

HostTensor HostTensor::Copy(std::string name, DType dtype, std::vector<int64_t> shape,
                            const void* src) {
  HostTensor t = Allocate(std::move(name), dtype, std::move(shape));
  if (t.nbytes() > 0) std::memcpy(t.mutable_data(), src, t.nbytes());
  return t;
}

HostTensor HostTensor::Wrap(std::string name, DType dtype, std::vector<int64_t> shape,
                            const void* data, std::shared_ptr<const void> owner) {
  Validate(name, shape);
  HostTensor t;
  t.name_ = std::move(name);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  if (data == nullptr && t.nbytes() > 0) {
    throw InvalidArgument(fmt::format("tensor '{}': null data for {} bytes", t.name_, t.nbytes()));
  }
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

size_t HostTensor::numel() const { return ShapeElements(shape_); }

collectives::TensorView HostTensor::view() const {
  return collectives::TensorView(const_cast<void*>(data_), numel(), dtype_);
}

std::string HostTensor::ToString() const {
  return fmt::format("{} {}[{}]", name_, collectives::DTypeName(dtype_), fmt::join(shape_, ","));
}

const HostTensor* Shard::Find(const std::string& name) const {
  for (const HostTensor& t : tensors) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

uint64_t Shard::TensorBytes() const {
  uint64_t total = 0;
  for (const HostTensor& t : tensors) total += t.nbytes();
  return total;
}

std::string AttrToString(const AttrValue& value) {
  struct Visitor {
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return fmt::format("{}", v); }
    std::string operator()(const std::string& v) const { return fmt::format("\"{}\"", v); }
    std::string operator()(const Blob& v) const {
      return fmt::format("<{} bytes>", v.bytes.size());
    }
  };
  return std::visit(Visitor{}, value);
}

}  // namespace cohort::checkpoint
