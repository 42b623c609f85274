// The shard file `rank-<r>.h5`: a plain HDF5 file (HDF5 1.8 format, readable by h5py, h5dump
// and any HDF5 reader). Layout:
//   /<tensor name>   one contiguous dataset per tensor, its groups taken from the '/' in the
//                    name (/model/fc1.weight, /optimizer/3/exp_avg); its dtype and shape; a
//                    "dtype" string attribute with cohort's name ("bf16", ...). Shape {} is a
//                    scalar dataspace. f16 is an IEEE half (h5py: float16); bf16 is a 2-byte
//                    HDF5 float with bfloat16's fields (h5py and h5dump convert it to float).
//   /meta            a group whose attributes are format_version, step, epoch, rank and the
//                    shard's own attributes: int64, float64, UTF-8 strings, and blobs as 1-D
//                    uint8 arrays (an empty blob has a null dataspace).
// Encoding writes no tensor bytes through HDF5: datasets are allocated early without fill values,
// HDF5 builds only the metadata in memory, and the file is streamed as metadata pieces
// interleaved with the caller's tensor buffers (no copy). Decoding reads tensors as views into
// the loaded file (no copy either).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/shard.h"

namespace cohort::checkpoint {

namespace h5 {
class ImageBuilder;
}

inline constexpr int64_t kShardFormatVersion = 1;

// A shard ready to write: the concatenation of pieces() is the file. Keeps the metadata image
// and the shard's tensors alive.
class EncodedShard {
 public:
  struct Piece {
    const uint8_t* data;
    size_t size;
  };

  EncodedShard(EncodedShard&&) noexcept;
  EncodedShard& operator=(EncodedShard&&) noexcept;
  ~EncodedShard();

  uint64_t size() const { return size_; }
  const std::vector<Piece>& pieces() const { return pieces_; }
  // Concatenates the pieces (for tests and small shards).
  std::string ToString() const;
  // Byte offset in the file of the named tensor's data (contiguous, tensor.nbytes() long); 0
  // for an empty tensor. Throws InvalidArgument for a name the shard does not hold.
  uint64_t TensorOffset(const std::string& name) const;

 private:
  friend EncodedShard EncodeShard(const Shard& shard, int rank);
  EncodedShard();

  std::unique_ptr<h5::ImageBuilder> image_;
  std::vector<HostTensor> tensors_;  // keep the bytes the pieces point into
  std::vector<Piece> pieces_;
  std::map<std::string, uint64_t> offsets_;  // tensor name -> file offset of its bytes
  uint64_t size_ = 0;
};

// Lays out `shard` as an HDF5 file. Throws InvalidArgument naming the tensor or attribute for
// duplicate names, a name that is both a tensor and a group, or a reserved attribute name.
EncodedShard EncodeShard(const Shard& shard, int rank);

// What DecodeShard read besides the Shard itself.
struct ShardHeader {
  int64_t format_version = 0;
  int64_t rank = -1;
};

// Reads a shard file. Tensors view into `file` (which they keep alive). Throws DataLoss naming
// `what` (e.g. the object's URI) when the bytes are not a shard cohort can read.
Shard DecodeShard(std::shared_ptr<const std::string> file, const std::string& what,
                  ShardHeader* header = nullptr);

}  // namespace cohort::checkpoint
