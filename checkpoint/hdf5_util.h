// HDF5 plumbing for shard files: checked calls, owned ids, the dtype mapping, and in-memory file
// images (HDF5's core driver) that are built and read without copying the tensor bytes.
#pragma once

#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "collectives/tensor_view.h"
#include "common/error.h"

namespace cohort::checkpoint::h5 {

// Throws `kind` with the call, file:line and HDF5's innermost error message.
[[noreturn]] void Fail(ErrorKind kind, const char* call, const char* file, int line);

// Turns off HDF5's printing of error stacks for the calling thread (errors become exceptions
// instead). Call at the start of every entry point; cheap after the first time per thread.
void QuietErrors();

// A file name no other open file image has: HDF5 treats two open core-driver files of the same
// name as one file (a second H5Fcreate fails, a second H5Fopen would share the first's data).
std::string UniqueImageName();

}  // namespace cohort::checkpoint::h5

// For HDF5 calls returning herr_t or hid_t: negative means failure. Returns the call's value.
#define COHORT_CHECK_H5(kind, call)                                                         \
  ([&]() {                                                                                  \
    auto cohort_h5_rc_ = (call);                                                            \
    if (cohort_h5_rc_ < 0)                                                                  \
      ::cohort::checkpoint::h5::Fail(::cohort::ErrorKind::kind, #call, __FILE__, __LINE__); \
    return cohort_h5_rc_;                                                                   \
  }())

namespace cohort::checkpoint::h5 {

// An owned HDF5 id, closed with the function that matches its type (H5Fclose, H5Dclose, ...).
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  ~Id() { Reset(); }
  Id(Id&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      Reset();
      id_ = o.id_;
      o.id_ = -1;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: ids are passed straight to H5 calls
  // Closes now, reporting failure (a file whose close fails was not written completely).
  void Close(ErrorKind kind);
  void Reset();

 private:
  hid_t id_ = -1;
};

// The HDF5 type a dtype is stored as: little-endian IEEE f32/f64, i32/i64/u8, f16 as an IEEE
// half (a 2-byte float with h5py's field layout, so h5py reads it as numpy float16), and bf16 as
// a 2-byte float with bfloat16's fields (sign 15, exponent 7..14 with bias 127, mantissa 0..6),
// which h5py and h5dump convert to float32 when read.
Id TypeFor(collectives::DType dtype);
// The dtype of a dataset's type. Throws DataLoss naming `what` for a type cohort does not write.
collectives::DType DTypeOf(hid_t type, const std::string& what);

// A file image being built in memory: the core driver's buffer, allocated with mmap and grown
// with mremap so that the untouched gaps reserved for tensor bytes cost no memory and are never
// copied. After the file is closed the buffer stays here (it is not freed by HDF5).
class ImageBuilder {
 public:
  ImageBuilder();
  ~ImageBuilder();
  ImageBuilder(const ImageBuilder&) = delete;
  ImageBuilder& operator=(const ImageBuilder&) = delete;

  // A file-access property list: core driver, no backing file, this builder's allocator.
  Id FileAccess();
  // The buffer's bytes (valid once the file was closed; capacity() >= the file's size).
  const uint8_t* data() const { return static_cast<const uint8_t*>(ptr_); }
  size_t capacity() const { return capacity_; }

 private:
  static void* Realloc(void* ptr, size_t size, H5FD_file_image_op_t op, void* udata);
  static void* Malloc(size_t size, H5FD_file_image_op_t op, void* udata);
  static void* Memcpy(void* dst, const void* src, size_t size, H5FD_file_image_op_t op,
                      void* udata);
  static herr_t Free(void* ptr, H5FD_file_image_op_t op, void* udata);
  static void* UdataCopy(void* udata) { return udata; }
  static herr_t UdataFree(void*) { return 0; }

  void* ptr_ = nullptr;
  size_t capacity_ = 0;  // mapped bytes
};

// Opens an in-memory file image read-only without copying it: the core driver reads straight
// from `bytes`, which must outlive the returned file id.
Id OpenImage(const void* bytes, size_t size);

}  // namespace cohort::checkpoint::h5
