#include "checkpoint/hdf5_util.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace cohort::checkpoint::h5 {
namespace {

herr_t CollectMessage(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  // Walking downward, the first entry is the API call and the last the innermost cause; keep
  // both ends: "H5Dcreate2: unable to create dataset (name already exists)".
  if (n == 0) {
    *out = fmt::format("{}: {}", err->func_name, err->desc ? err->desc : "");
  } else if (err->desc) {
    const size_t paren = out->find(" (");
    *out = fmt::format("{} ({})", paren == std::string::npos ? *out : out->substr(0, paren),
                       err->desc);
  }
  return 0;
}

size_t PageRound(size_t n) {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return (std::max<size_t>(n, 1) + page - 1) / page * page;
}

// Read-only image state shared by the property lists and the file HDF5 copies it into.
struct ReadImage {
  const void* bytes;
  size_t size;
  std::atomic<int> refs{1};
};

void* ReadMalloc(size_t size, H5FD_file_image_op_t, void* udata) {
  auto* image = static_cast<ReadImage*>(udata);
  return size <= image->size ? const_cast<void*>(image->bytes) : nullptr;
}
void* ReadMemcpy(void* dst, const void* src, size_t size, H5FD_file_image_op_t, void*) {
  if (dst != src) std::memcpy(dst, src, size);  // never happens: ReadMalloc hands out src
  return dst;
}
void* ReadRealloc(void*, size_t, H5FD_file_image_op_t, void*) { return nullptr; }  // read-only
herr_t ReadFree(void*, H5FD_file_image_op_t, void*) { return 0; }
void* ReadUdataCopy(void* udata) {
  static_cast<ReadImage*>(udata)->refs.fetch_add(1);
  return udata;
}
herr_t ReadUdataFree(void* udata) {
  auto* image = static_cast<ReadImage*>(udata);
  if (image->refs.fetch_sub(1) == 1) delete image;
  return 0;
}

}  // namespace

void Fail(ErrorKind kind, const char* call, const char* file, int line) {
  std::string message = "unknown HDF5 error";
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, CollectMessage, &message);
  H5Eclear2(H5E_DEFAULT);
  std::string callee = call;
  if (auto paren = callee.find('('); paren != std::string::npos) callee.resize(paren);
  std::string where = file;
  if (auto pos = where.rfind("checkpoint/"); pos != std::string::npos) where = where.substr(pos);
  ThrowError(kind, fmt::format("{}() failed at {}:{}: {}", callee, where, line, message));
}

std::string UniqueImageName() {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("cohort-image-{}-{}", ::getpid(), counter.fetch_add(1));
}

void QuietErrors() {
  thread_local bool quiet = false;
  if (quiet) return;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  quiet = true;
}

void Id::Close(ErrorKind kind) {
  if (id_ < 0) return;
  const hid_t id = id_;
  id_ = -1;
  herr_t rc = 0;
  switch (H5Iget_type(id)) {
    case H5I_FILE:
      rc = H5Fclose(id);
      break;
    case H5I_GROUP:
      rc = H5Gclose(id);
      break;
    case H5I_DATASET:
      rc = H5Dclose(id);
      break;
    case H5I_DATATYPE:
      rc = H5Tclose(id);
      break;
    case H5I_DATASPACE:
      rc = H5Sclose(id);
      break;
    case H5I_ATTR:
      rc = H5Aclose(id);
      break;
    case H5I_GENPROP_LST:
      rc = H5Pclose(id);
      break;
    default:
      rc = H5Oclose(id);
      break;
  }
  if (rc < 0) Fail(kind, "H5Xclose", __FILE__, __LINE__);
}

void Id::Reset() {
  if (id_ < 0) return;
  try {
    Close(ErrorKind::kInternal);
  } catch (const Error&) {
    // Destructors must not throw; the error stack was cleared by Fail().
  }
}

Id TypeFor(collectives::DType dtype) {
  using collectives::DType;
  switch (dtype) {
    case DType::kFloat32:
      return Id(H5Tcopy(H5T_IEEE_F32LE));
    case DType::kFloat64:
      return Id(H5Tcopy(H5T_IEEE_F64LE));
    case DType::kInt32:
      return Id(H5Tcopy(H5T_STD_I32LE));
    case DType::kInt64:
      return Id(H5Tcopy(H5T_STD_I64LE));
    case DType::kUInt8:
      return Id(H5Tcopy(H5T_STD_U8LE));
    case DType::kFloat16:
    case DType::kBFloat16: {
      // HDF5 1.10 has no predefined 16-bit floats: derive one from f32 by setting its fields.
      const bool half = dtype == DType::kFloat16;
      Id type(COHORT_CHECK_H5(kInternal, H5Tcopy(H5T_IEEE_F32LE)));
      COHORT_CHECK_H5(kInternal,
                      H5Tset_fields(type, 15, half ? 10 : 7, half ? 5 : 8, 0, half ? 10 : 7));
      COHORT_CHECK_H5(kInternal, H5Tset_offset(type, 0));
      COHORT_CHECK_H5(kInternal, H5Tset_precision(type, 16));
      COHORT_CHECK_H5(kInternal, H5Tset_size(type, 2));
      COHORT_CHECK_H5(kInternal, H5Tset_ebias(type, half ? 15 : 127));
      return type;
    }
  }
  throw Internal("TypeFor: unknown dtype");
}

collectives::DType DTypeOf(hid_t type, const std::string& what) {
  using collectives::DType;
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  const bool little = H5Tget_order(type) == H5T_ORDER_LE || size == 1;
  if (little && cls == H5T_FLOAT) {
    if (size == 4) return DType::kFloat32;
    if (size == 8) return DType::kFloat64;
    size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    if (size == 2 && H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0) {
      if (esize == 5 && msize == 10) return DType::kFloat16;
      if (esize == 8 && msize == 7) return DType::kBFloat16;
    }
  }
  if (little && cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 4 && is_signed) return DType::kInt32;
    if (size == 8 && is_signed) return DType::kInt64;
    if (size == 1 && !is_signed) return DType::kUInt8;
  }
  throw DataLoss(fmt::format(
      "{}: HDF5 type (class {}, {} bytes) is none of the types cohort writes (little-endian "
      "f32 f64 f16 bf16 i32 i64 u8)",
      what, static_cast<int>(cls), size));
}

ImageBuilder::ImageBuilder() = default;

ImageBuilder::~ImageBuilder() {
  if (ptr_ != nullptr) ::munmap(ptr_, capacity_);
}

Id ImageBuilder::FileAccess() {
  Id fapl(COHORT_CHECK_H5(kInternal, H5Pcreate(H5P_FILE_ACCESS)));
  // Growth increment: metadata lands between the (untouched) tensor regions, so a coarse step
  // costs only address space.
  COHORT_CHECK_H5(kInternal, H5Pset_fapl_core(fapl, 1 << 20, /*backing_store=*/0));
  H5FD_file_image_callbacks_t callbacks = {Malloc,    Memcpy,    Realloc, Free,
                                           UdataCopy, UdataFree, this};
  COHORT_CHECK_H5(kInternal, H5Pset_file_image_callbacks(fapl, &callbacks));
  return fapl;
}

void* ImageBuilder::Realloc(void* ptr, size_t size, H5FD_file_image_op_t, void* udata) {
  auto* self = static_cast<ImageBuilder*>(udata);
  const size_t capacity = PageRound(size);
  void* out;
  if (self->ptr_ == nullptr) {
    out = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  } else {
    if (ptr != self->ptr_) return nullptr;  // only one buffer per builder
    out = ::mremap(self->ptr_, self->capacity_, capacity, MREMAP_MAYMOVE);
  }
  if (out == MAP_FAILED) return nullptr;  // HDF5 reports it as an allocation failure
  self->ptr_ = out;
  self->capacity_ = capacity;
  return out;
}

void* ImageBuilder::Malloc(size_t size, H5FD_file_image_op_t op, void* udata) {
  auto* self = static_cast<ImageBuilder*>(udata);
  return Realloc(self->ptr_, size, op, udata);
}

void* ImageBuilder::Memcpy(void* dst, const void* src, size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dst, src, size);
}

herr_t ImageBuilder::Free(void*, H5FD_file_image_op_t, void*) {
  return 0;  // the builder keeps its buffer past H5Fclose and unmaps it when destroyed
}

Id OpenImage(const void* bytes, size_t size) {
  QuietErrors();
  Id fapl(COHORT_CHECK_H5(kInternal, H5Pcreate(H5P_FILE_ACCESS)));
  COHORT_CHECK_H5(kInternal, H5Pset_fapl_core(fapl, 1 << 20, /*backing_store=*/0));
  auto* image = new ReadImage{bytes, size};
  H5FD_file_image_callbacks_t callbacks = {ReadMalloc,    ReadMemcpy,    ReadRealloc, ReadFree,
                                           ReadUdataCopy, ReadUdataFree, image};
  const herr_t rc = H5Pset_file_image_callbacks(fapl, &callbacks);
  ReadUdataFree(image);  // the property list holds its own reference now (or none on failure)
  if (rc < 0) Fail(ErrorKind::kInternal, "H5Pset_file_image_callbacks", __FILE__, __LINE__);
  COHORT_CHECK_H5(kInternal, H5Pset_file_image(fapl, const_cast<void*>(bytes), size));
  const std::string name = UniqueImageName();
  return Id(COHORT_CHECK_H5(kDataLoss, H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl)));
}

}  // namespace cohort::checkpoint::h5
