// What one rank saves: named host tensors plus metadata. Torch-free: runtime/ copies model,
// optimizer, RNG and sampler state into these (phase one of a save) and back after a load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "collectives/tensor_view.h"

namespace cohort::checkpoint {

using collectives::DType;

// A tensor in host memory with a '/'-separated name ("model/fc1.weight", "optimizer/3/exp_avg")
// that becomes its HDF5 path. The bytes are shared and immutable once handed to a save; tensors
// returned by a load view into the shard they came from (no copy).
class HostTensor {
 public:
  HostTensor() = default;

  // Uninitialised bytes for shape; fill them through mutable_data() before saving.
  static HostTensor Allocate(std::string name, DType dtype, std::vector<int64_t> shape);
  // A copy of nbytes() bytes at src.
  static HostTensor Copy(std::string name, DType dtype, std::vector<int64_t> shape,
                         const void* src);
  // Writable bytes the caller provides (e.g. from a HostBufferPool): `bytes` must hold the
  // shape's bytes and is released when the last copy of this tensor goes.
  static HostTensor Adopt(std::string name, DType dtype, std::vector<int64_t> shape,
                          std::shared_ptr<void> bytes);
  // Wraps bytes the caller owns (e.g. pinned memory): owner keeps them alive while any copy of
  // this tensor exists. data must hold the shape's bytes.
  static HostTensor Wrap(std::string name, DType dtype, std::vector<int64_t> shape,
                         const void* data, std::shared_ptr<const void> owner);

  const std::string& name() const { return name_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  // Elements: the product of the shape (1 for a scalar, shape {}).
  size_t numel() const;
  size_t nbytes() const { return numel() * collectives::ElementSize(dtype_); }
  const void* data() const { return data_; }
  // Writable bytes of a tensor made by Allocate() or Adopt(); nullptr for wrapped or loaded ones.
  void* mutable_data() const { return writable_ ? const_cast<void*>(data_) : nullptr; }
  // A view for collectives (it does not keep the bytes alive).
  collectives::TensorView view() const;
  // "model/fc1.weight bf16[3,5]".
  std::string ToString() const;

 private:
  // Throws InvalidArgument naming the tensor when the name or shape is unusable.
  static void Validate(const std::string& name, const std::vector<int64_t>& shape);

  std::string name_;
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_;
  std::shared_ptr<const void> owner_;
  const void* data_ = nullptr;
  bool writable_ = false;
};

// Opaque bytes (RNG state, sampler position): stored as a u8 array attribute.
struct Blob {
  std::vector<uint8_t> bytes;
  bool operator==(const Blob& o) const { return bytes == o.bytes; }
};

// Where a tensor of a sharded save lies in the unsharded (global) tensor of the same name: the
// tensor holds the box {offsets, its own shape} of global_shape. See checkpoint/layout.h.
struct TensorSlice {
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offsets;
};

// A small value in /meta: integer, float, UTF-8 text (no NUL), or bytes.
using AttrValue = std::variant<int64_t, double, std::string, Blob>;

struct Shard {
  int64_t step = 0;
  int64_t epoch = 0;
  // Names without '/' other than letters, digits and "_.-"; "step", "epoch", "rank" and
  // "format_version" are reserved.
  std::map<std::string, AttrValue> attributes;
  std::vector<HostTensor> tensors;
  // Sharded saves only: the tensors (by name) that are slices of a larger global tensor. Other
  // tensors under model/ and optimizer/ are whole; the rest are this rank's own (rng/...).
  std::map<std::string, TensorSlice> slices;

  // The tensor called name, or nullptr.
  const HostTensor* Find(const std::string& name) const;
  // Sum of the tensors' bytes.
  uint64_t TensorBytes() const;
};

// "123", "1.5", "\"text\"" or "<16 bytes>", for listings.
std::string AttrToString(const AttrValue& value);

}  // namespace cohort::checkpoint
