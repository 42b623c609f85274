#include "checkpoint/shard_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "checkpoint/hdf5_util.h"
#include "common/error.h"

namespace cohort::checkpoint {
namespace {

using h5::Id;

const char* const kReserved[] = {"format_version", "step", "epoch", "rank"};

bool IsReserved(const std::string& name) {
  return std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved);
}

void ValidateShard(const Shard& shard) {
  std::set<std::string> names;
  for (const HostTensor& t : shard.tensors) {
    if (!names.insert(t.name()).second) {
      throw InvalidArgument(
          fmt::format("two tensors are called '{}'; names must be unique", t.name()));
    }
  }
  for (const std::string& name : names) {
    for (size_t slash = name.find('/'); slash != std::string::npos;
         slash = name.find('/', slash + 1)) {
      if (names.count(name.substr(0, slash))) {
        throw InvalidArgument(
            fmt::format("tensor '{}' is also the group of tensor '{}'; rename one of them",
                        name.substr(0, slash), name));
      }
    }
  }
  for (const auto& [key, value] : shard.attributes) {
    if (key.empty() || key.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                             "0123456789_.-") != std::string::npos) {
      throw InvalidArgument(
          fmt::format("bad attribute name '{}': use letters, digits, '_', '.' and '-'", key));
    }
    if (IsReserved(key)) {
      throw InvalidArgument(fmt::format(
          "attribute name '{}' is reserved (format_version, step, epoch, rank); set Shard::step "
          "and Shard::epoch instead or pick another name",
          key));
    }
    if (auto* text = std::get_if<std::string>(&value); text && text->find('\0') != text->npos) {
      throw InvalidArgument(
          fmt::format("attribute '{}' is text with a NUL byte; store binary data as a Blob", key));
    }
  }
}

alignas(64) const uint8_t kZeros[65536] = {};

// The file's size as its superblock (version 2, written at close) records it: the end of the
// allocated space, which closing may have lowered below `before_close` by freeing unused space.
uint64_t FinalFileSize(const uint8_t* image, size_t capacity, hssize_t before_close) {
  constexpr size_t kEoaOffset = 28;  // signature 8, version/sizes/flags 4, base 8, ext 8
  if (capacity >= kEoaOffset + 8 && image[8] >= 2 && image[9] == 8) {
    uint64_t eoa = 0;
    for (int i = 7; i >= 0; --i) eoa = eoa << 8 | image[kEoaOffset + i];
    return eoa;
  }
  return static_cast<uint64_t>(before_close);
}

// Bytes of HDF5 metadata a shard needs, generously: measured ~0.5 KiB per tensor with short
// names, ~1.2 KiB per tensor at 10000 tensors in one group (dense link storage). The unused rest
// of the block is a hole of zeros in the file. An underestimate costs speed (the core driver
// zero-fills up to metadata written past the tensor regions), never correctness.
hsize_t MetadataEstimate(const Shard& shard) {
  hsize_t bytes = 8192;
  for (const HostTensor& t : shard.tensors) bytes += 2048 + 2 * t.name().size();
  for (const auto& [key, value] : shard.attributes) {
    bytes += 256 + 2 * key.size();
    if (auto* text = std::get_if<std::string>(&value)) bytes += 2 * text->size();
    if (auto* blob = std::get_if<Blob>(&value)) bytes += 2 * blob->bytes.size();
  }
  return (bytes + 4095) / 4096 * 4096;
}

Id Plist(hid_t cls) { return Id(COHORT_CHECK_H5(kInternal, H5Pcreate(cls))); }

void WriteAttr(hid_t loc, const std::string& name, const AttrValue& value) {
  Id space, type;
  const void* buf = nullptr;
  hid_t mem_type = -1;
  const char* text = nullptr;
  int64_t i = 0;
  double d = 0;
  if (auto* pi = std::get_if<int64_t>(&value)) {
    i = *pi;
    space = Id(H5Screate(H5S_SCALAR));
    type = Id(H5Tcopy(H5T_STD_I64LE));
    buf = &i;
    mem_type = H5T_NATIVE_INT64;
  } else if (auto* pd = std::get_if<double>(&value)) {
    d = *pd;
    space = Id(H5Screate(H5S_SCALAR));
    type = Id(H5Tcopy(H5T_IEEE_F64LE));
    buf = &d;
    mem_type = H5T_NATIVE_DOUBLE;
  } else if (auto* ps = std::get_if<std::string>(&value)) {
    // Fixed-length: variable-length strings live in a global heap that HDF5 allocates past
    // the tensor regions (see MetadataEstimate).
    space = Id(H5Screate(H5S_SCALAR));
    type = Id(H5Tcopy(H5T_C_S1));
    COHORT_CHECK_H5(kInternal, H5Tset_size(type, std::max<size_t>(1, ps->size())));
    COHORT_CHECK_H5(kInternal, H5Tset_strpad(type, H5T_STR_NULLPAD));
    COHORT_CHECK_H5(kInternal, H5Tset_cset(type, H5T_CSET_UTF8));
    text = ps->empty() ? "" : ps->data();
    buf = text;
    mem_type = type;
  } else {
    const auto& bytes = std::get<Blob>(value).bytes;
    const hsize_t n = bytes.size();
    space = Id(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr));
    type = Id(H5Tcopy(H5T_STD_U8LE));
    buf = n == 0 ? nullptr : bytes.data();
    mem_type = H5T_NATIVE_UINT8;
  }
  Id attr(COHORT_CHECK_H5(kInternal,
                          H5Acreate2(loc, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)));
  if (buf != nullptr) COHORT_CHECK_H5(kInternal, H5Awrite(attr, mem_type, buf));
}

AttrValue ReadAttr(hid_t loc, const std::string& name) {
  Id attr(COHORT_CHECK_H5(kDataLoss, H5Aopen(loc, name.c_str(), H5P_DEFAULT)));
  Id type(COHORT_CHECK_H5(kDataLoss, H5Aget_type(attr)));
  Id space(COHORT_CHECK_H5(kDataLoss, H5Aget_space(attr)));
  const H5S_class_t shape = H5Sget_simple_extent_type(space);
  const H5T_class_t cls = H5Tget_class(type);
  if (cls == H5T_INTEGER && H5Tget_size(type) == 1 && H5Tget_sign(type) == H5T_SGN_NONE &&
      shape != H5S_SCALAR) {
    Blob blob;
    if (shape == H5S_SIMPLE) {
      blob.bytes.resize(static_cast<size_t>(H5Sget_simple_extent_npoints(space)));
      COHORT_CHECK_H5(kDataLoss, H5Aread(attr, H5T_NATIVE_UINT8, blob.bytes.data()));
    }
    return blob;
  }
  if (shape == H5S_SCALAR && cls == H5T_INTEGER) {
    int64_t v = 0;
    COHORT_CHECK_H5(kDataLoss, H5Aread(attr, H5T_NATIVE_INT64, &v));
    return v;
  }
  if (shape == H5S_SCALAR && cls == H5T_FLOAT) {
    double v = 0;
    COHORT_CHECK_H5(kDataLoss, H5Aread(attr, H5T_NATIVE_DOUBLE, &v));
    return v;
  }
  if (shape == H5S_SCALAR && cls == H5T_STRING) {
    if (H5Tis_variable_str(type) > 0) {
      char* text = nullptr;
      COHORT_CHECK_H5(kDataLoss, H5Aread(attr, type, &text));
      std::string out = text ? text : "";
      H5free_memory(text);
      return out;
    }
    std::string out(H5Tget_size(type), '\0');
    COHORT_CHECK_H5(kDataLoss, H5Aread(attr, type, out.data()));
    out.resize(out.find_last_not_of('\0') + 1);  // npos + 1 == 0: all padding
    return out;
  }
  throw DataLoss(fmt::format("/meta attribute '{}' has a type cohort does not write", name));
}

herr_t CollectAttrName(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}

herr_t CollectLinkName(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}

// A dataset read into a tensor: a view into the file when its bytes lie there contiguously and
// aligned for the dtype, else a copy through H5Dread.
HostTensor ReadTensor(hid_t file, const std::string& name,
                      const std::shared_ptr<const std::string>& bytes, const std::string& what) {
  Id dset(COHORT_CHECK_H5(kDataLoss, H5Dopen2(file, name.c_str(), H5P_DEFAULT)));
  Id type(COHORT_CHECK_H5(kDataLoss, H5Dget_type(dset)));
  const DType dtype = h5::DTypeOf(type, fmt::format("{}: dataset /{}", what, name));
  Id space(COHORT_CHECK_H5(kDataLoss, H5Dget_space(dset)));
  const int rank = COHORT_CHECK_H5(kDataLoss, H5Sget_simple_extent_ndims(space));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) COHORT_CHECK_H5(kDataLoss, H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  std::vector<int64_t> shape(dims.begin(), dims.end());
  size_t nbytes = collectives::ElementSize(dtype);
  for (hsize_t d : dims) nbytes *= static_cast<size_t>(d);
  if (nbytes == 0) return HostTensor::Allocate(name, dtype, shape);

  Id dcpl(COHORT_CHECK_H5(kDataLoss, H5Dget_create_plist(dset)));
  const haddr_t offset = H5Dget_offset(dset);
  if (H5Pget_layout(dcpl) == H5D_CONTIGUOUS && H5Pget_nfilters(dcpl) == 0 &&
      offset != HADDR_UNDEF && offset <= bytes->size() && nbytes <= bytes->size() - offset) {
    const char* data = bytes->data() + offset;
    if (reinterpret_cast<uintptr_t>(data) % collectives::ElementSize(dtype) == 0) {
      return HostTensor::Wrap(name, dtype, shape, data, bytes);
    }
  }
  HostTensor out = HostTensor::Allocate(name, dtype, shape);
  COHORT_CHECK_H5(kDataLoss,
                  H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.mutable_data()));
  return out;
}

// A tensor's bytes and where HDF5 placed them in the file.
using Region = std::pair<uint64_t, const HostTensor*>;

// The file access list of a shard image: the 1.8 format (dense attribute storage for blobs over
// 64 KiB, wide reader support); every allocation on a 64-byte boundary, so that loaded tensors
// can be used in place; one metadata block big enough for all the metadata, so that it lies
// before the tensor regions (the core driver zero-fills whatever lies below the highest address
// written, and tensor regions are never written through HDF5).
void SetFileAccess(hid_t fapl, const Shard& shard) {
  COHORT_CHECK_H5(kInternal, H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18));
  COHORT_CHECK_H5(kInternal, H5Pset_alignment(fapl, 1, 64));
  COHORT_CHECK_H5(kInternal, H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG));
  COHORT_CHECK_H5(kInternal, H5Pset_meta_block_size(fapl, MetadataEstimate(shard)));
}

// /meta, first: its (possibly large) attributes are allocated before any tensor region.
void WriteMeta(hid_t file, hid_t gcpl, const Shard& shard, int rank) {
  Id meta(COHORT_CHECK_H5(kInternal, H5Gcreate2(file, "meta", H5P_DEFAULT, gcpl, H5P_DEFAULT)));
  WriteAttr(meta, "format_version", kShardFormatVersion);
  WriteAttr(meta, "step", shard.step);
  WriteAttr(meta, "epoch", shard.epoch);
  WriteAttr(meta, "rank", static_cast<int64_t>(rank));
  for (const auto& [key, value] : shard.attributes) WriteAttr(meta, key, value);
  meta.Close(ErrorKind::kInternal);
}

// The groups the tensors' names need ("a/b/c" needs a and a/b), parents before children.
void CreateGroups(hid_t file, hid_t gcpl, const std::vector<HostTensor>& tensors) {
  std::set<std::string> groups;
  for (const HostTensor& t : tensors) {
    for (size_t slash = t.name().find('/'); slash != std::string::npos;
         slash = t.name().find('/', slash + 1)) {
      groups.insert(t.name().substr(0, slash));
    }
  }
  for (const std::string& g : groups) {  // sorted: parents before children
    Id(COHORT_CHECK_H5(kInternal, H5Gcreate2(file, g.c_str(), H5P_DEFAULT, gcpl, H5P_DEFAULT)));
  }
}

// One contiguous dataset per tensor, allocated now and never written through HDF5; returns
// where the non-empty ones lie.
std::vector<Region> CreateDatasets(hid_t file, hid_t dcpl, const std::vector<HostTensor>& tensors) {
  std::vector<Region> regions;
  for (const HostTensor& t : tensors) {
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    Id space(COHORT_CHECK_H5(
        kInternal, dims.empty()
                       ? H5Screate(H5S_SCALAR)
                       : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
    Id type = h5::TypeFor(t.dtype());
    Id dset(COHORT_CHECK_H5(kInternal, H5Dcreate2(file, t.name().c_str(), type, space, H5P_DEFAULT,
                                                  dcpl, H5P_DEFAULT)));
    WriteAttr(dset, "dtype", std::string(collectives::DTypeName(t.dtype())));
    if (t.nbytes() == 0) continue;
    const haddr_t offset = H5Dget_offset(dset);
    if (offset == HADDR_UNDEF) {
      throw Internal(fmt::format("HDF5 allocated no storage for tensor '{}'", t.name()));
    }
    regions.emplace_back(offset, &t);
  }
  return regions;
}

// Builds the shard's HDF5 file, but the tensors' bytes, in image; returns the end of the space
// it allocated, and fills regions. No timestamps in object headers (the root group's included,
// set through the file creation list): the same state gives the same bytes and digest.
hssize_t BuildImage(h5::ImageBuilder& image, const Shard& shard, int rank,
                    const std::vector<HostTensor>& tensors, std::vector<Region>* regions) {
  Id fapl = image.FileAccess();
  SetFileAccess(fapl, shard);
  Id fcpl = Plist(H5P_FILE_CREATE);
  COHORT_CHECK_H5(kInternal, H5Pset_obj_track_times(fcpl, 0));
  const std::string file_name = h5::UniqueImageName();
  Id file(COHORT_CHECK_H5(kInternal, H5Fcreate(file_name.c_str(), H5F_ACC_TRUNC, fcpl, fapl)));
  Id gcpl = Plist(H5P_GROUP_CREATE);
  COHORT_CHECK_H5(kInternal, H5Pset_obj_track_times(gcpl, 0));
  Id dcpl = Plist(H5P_DATASET_CREATE);
  COHORT_CHECK_H5(kInternal, H5Pset_obj_track_times(dcpl, 0));
  COHORT_CHECK_H5(kInternal, H5Pset_layout(dcpl, H5D_CONTIGUOUS));
  COHORT_CHECK_H5(kInternal, H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY));
  COHORT_CHECK_H5(kInternal, H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
  WriteMeta(file, gcpl, shard, rank);
  CreateGroups(file, gcpl, tensors);
  *regions = CreateDatasets(file, dcpl, tensors);
  // No H5Fflush: it would size the core buffer to the whole file and zero it; closing writes
  // the metadata, which all lies in the first metadata block.
  const hssize_t file_size = COHORT_CHECK_H5(kInternal, H5Fget_file_image(file, nullptr, 0));
  file.Close(ErrorKind::kInternal);
  return file_size;
}

// The file as pieces: metadata from the image, tensor bytes from the tensors, in offset order.
// Space HDF5 allocated but never wrote (the unused end of the metadata block) reads as zeros.
void Assemble(const uint8_t* image, size_t capacity, uint64_t size, std::vector<Region> regions,
              std::vector<EncodedShard::Piece>* pieces, std::map<std::string, uint64_t>* offsets) {
  std::sort(regions.begin(), regions.end());
  uint64_t cursor = 0;
  auto add_image = [&](uint64_t end) {
    const uint64_t mapped = std::min<uint64_t>(end, capacity);
    if (mapped > cursor) {
      pieces->push_back({image + cursor, static_cast<size_t>(mapped - cursor)});
      cursor = mapped;
    }
    for (; cursor < end; cursor += std::min<uint64_t>(end - cursor, sizeof(kZeros))) {
      pieces->push_back(
          {kZeros, static_cast<size_t>(std::min<uint64_t>(end - cursor, sizeof(kZeros)))});
    }
  };
  for (const auto& [offset, tensor] : regions) {
    if (offset < cursor || offset + tensor->nbytes() > size) {
      throw Internal(fmt::format("shard layout: tensor '{}' at {} overlaps or exceeds the file",
                                 tensor->name(), offset));
    }
    add_image(offset);
    (*offsets)[tensor->name()] = offset;
    pieces->push_back({static_cast<const uint8_t*>(tensor->data()), tensor->nbytes()});
    cursor = offset + tensor->nbytes();
  }
  add_image(size);
}

}  // namespace

EncodedShard::EncodedShard() = default;
EncodedShard::EncodedShard(EncodedShard&&) noexcept = default;
EncodedShard& EncodedShard::operator=(EncodedShard&&) noexcept = default;
EncodedShard::~EncodedShard() = default;

std::string EncodedShard::ToString() const {
  std::string out;
  out.reserve(size_);
  for (const Piece& p : pieces_) out.append(reinterpret_cast<const char*>(p.data), p.size);
  return out;
}

uint64_t EncodedShard::TensorOffset(const std::string& name) const {
  const auto it = offsets_.find(name);
  if (it != offsets_.end()) return it->second;
  for (const HostTensor& t : tensors_) {
    if (t.name() == name) return 0;  // empty: no region
  }
  throw InvalidArgument(fmt::format("the encoded shard has no tensor '{}'", name));
}

EncodedShard EncodeShard(const Shard& shard, int rank) {
  h5::QuietErrors();
  ValidateShard(shard);
  EncodedShard out;
  out.image_ = std::make_unique<h5::ImageBuilder>();
  out.tensors_ = shard.tensors;
  std::vector<Region> regions;  // into out.tensors_, whose bytes the pieces point into
  const hssize_t file_size = BuildImage(*out.image_, shard, rank, out.tensors_, &regions);
  const auto* image = out.image_->data();
  out.size_ = FinalFileSize(image, out.image_->capacity(), file_size);
  Assemble(image, out.image_->capacity(), out.size_, std::move(regions), &out.pieces_,
           &out.offsets_);
  return out;
}

Shard DecodeShard(std::shared_ptr<const std::string> file_bytes, const std::string& what,
                  ShardHeader* header) {
  h5::QuietErrors();
  try {
    Id file = h5::OpenImage(file_bytes->data(), file_bytes->size());
    Shard shard;
    Id meta(COHORT_CHECK_H5(kDataLoss, H5Gopen2(file, "meta", H5P_DEFAULT)));
    std::vector<std::string> attrs;
    COHORT_CHECK_H5(
        kDataLoss, H5Aiterate2(meta, H5_INDEX_NAME, H5_ITER_INC, nullptr, CollectAttrName, &attrs));
    ShardHeader head;
    for (const std::string& key : attrs) {
      AttrValue value = ReadAttr(meta, key);
      if (!IsReserved(key)) {
        shard.attributes.emplace(key, std::move(value));
        continue;
      }
      const int64_t* number = std::get_if<int64_t>(&value);
      if (number == nullptr) throw DataLoss(fmt::format("/meta/{} is not an integer", key));
      if (key == "format_version") head.format_version = *number;
      if (key == "step") shard.step = *number;
      if (key == "epoch") shard.epoch = *number;
      if (key == "rank") head.rank = *number;
    }
    if (head.format_version < 1 || head.format_version > kShardFormatVersion) {
      throw DataLoss(
          fmt::format("shard format version {} (this cohort reads 1..{}); a newer cohort wrote it",
                      head.format_version, kShardFormatVersion));
    }

    std::vector<std::string> links;
    COHORT_CHECK_H5(kDataLoss, H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, CollectLinkName, &links));
    for (const std::string& name : links) {
      if (name == "meta" || name.rfind("meta/", 0) == 0) continue;
      Id object(COHORT_CHECK_H5(kDataLoss, H5Oopen(file, name.c_str(), H5P_DEFAULT)));
      if (H5Iget_type(object) != H5I_DATASET) continue;
      shard.tensors.push_back(ReadTensor(file, name, file_bytes, what));
    }
    if (header != nullptr) *header = head;
    return shard;
  } catch (const Error& e) {
    throw DataLoss(fmt::format("{} is not a readable cohort shard: {}", what, e.what()));
  }
}

}  // namespace cohort::checkpoint
