// The layout of a sharded snapshot: how the global (unsharded) tensors of a model-parallel job
// are cut over the ranks that saved them, as manifest.json records it. Tensor names are global
// (the unsharded model's names), so a snapshot saved at one layout resumes at any other.
//
// manifest.json of a sharded snapshot (format version 2):
//   "layout": {"kind": "sharded", "mesh": {"dp": 2, "pp": 1, "tp": 2}, "digest_block": 4194304,
//              "tensors": {"model/fc1.weight": {"dtype": "f32", "shape": [64, 32], "shards": [
//                  {"rank": 0, "offsets": [0, 0], "sizes": [32, 32], "offset": 4096,
//                   "digests": ["xxh3-128:..."]}, {"rank": 1, "offsets": [32, 0], ...}]}, ...}}
//   "shards": [{"rank": 0, "object": "rank-0.h5", "size": ..., "digest": ..., "contents": {
//                  "tensors": [{"name": "rng/cpu", "dtype": "u8", "shape": [5056],
//                               "offset": ..., "digests": [...]}],
//                  "attributes": {"sampler_position": {"int": 64}, ...}}}, ...]
// Mesh rank order (collectives/mesh.h): tp fastest, then pp, then dp.
//
// Every tensor of a shard file is listed with its byte offset in the file (HDF5 contiguous
// datasets, H5Dget_offset at encoding) and the digests of its bytes cut into digest_block-sized
// blocks. A rank that resumes at another layout reads only the blocks that hold the slices it
// needs (ranged GETs) and verifies each block it read against its digest; it never parses a
// foreign HDF5 file nor reads a whole foreign shard. The whole-file digests stay as they are
// (`cohort checkpoint verify` and data-parallel loads check them). The manifest is the root of
// trust, as before: it is written last, by rank 0, once every shard has landed.
//
// Each tensor under model/ or optimizer/ is part of the global state; Shard::slices says which
// of them are slices of a larger tensor (the others are whole, e.g. a replicated bias). Copies
// of the same box on several ranks (a tensor replicated over tensor-parallel ranks) are allowed;
// otherwise the boxes of a tensor must tile its global shape. Everything else a shard holds
// (rng/..., /meta attributes) belongs to the saving rank. Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/box.h"
#include "checkpoint/digest.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"

namespace cohort::checkpoint {

class EncodedShard;

inline constexpr uint64_t kDefaultDigestBlock = 4ull << 20;

// Sizes of the dp x pp x tp mesh of a sharded save.
struct MeshSizes {
  int dp = 1;
  int pp = 1;
  int tp = 1;
  int Ranks() const { return dp * pp * tp; }
  int DpOf(int rank) const { return rank / (tp * pp); }
  int PpOf(int rank) const { return (rank / tp) % pp; }
  int TpOf(int rank) const { return rank % tp; }
  bool operator==(const MeshSizes& o) const { return dp == o.dp && pp == o.pp && tp == o.tp; }
};

// CheckpointOptions::layout for a sharded save. Throws InvalidArgument for sizes below 1 or a
// digest block of 0.
nlohmann::json ShardedLayoutSpec(const MeshSizes& mesh,
                                 uint64_t digest_block = kDefaultDigestBlock);
// Whether a manifest layout (or a CheckpointOptions::layout) is sharded.
bool IsShardedLayout(const nlohmann::json& layout);

// Each rank of a sharded save, after encoding its shard: the ShardEntry::contents it reports
// (every tensor with its offset, block digests and, for global ones, its box; its attributes).
// Throws InvalidArgument naming the tensor when a slice does not fit its global shape.
nlohmann::json DescribeContents(const Shard& shard, const EncodedShard& encoded,
                                DigestAlgorithm algorithm, uint64_t digest_block);
// Rank 0, before writing a sharded manifest: moves the global tensors out of every entry's
// contents into layout["tensors"] and sets format version 2. Throws InvalidArgument naming the
// tensor when the ranks disagree on its dtype or global shape, or its boxes do not tile it.
void FinalizeShardedManifest(Manifest& manifest);

// One saved copy of a box of a global tensor, or one rank-own tensor (box = its whole shape).
struct StoredBlock {
  int rank = 0;
  Box box;
  uint64_t offset = 0;               // of its bytes in the rank's shard file
  std::vector<std::string> digests;  // one per digest_block bytes
};

struct GlobalTensor {
  std::string name;
  DType dtype = DType::kFloat32;
  Shape shape;
  std::vector<StoredBlock> shards;  // by rank; copies of one box allowed
};

struct LocalTensor {
  std::string name;
  DType dtype = DType::kFloat32;
  StoredBlock stored;  // box = the tensor's whole shape
};

// What a saved rank holds besides global tensors.
struct RankContents {
  std::vector<LocalTensor> tensors;
  std::map<std::string, AttrValue> attributes;
};

// A sharded manifest's layout, parsed and checked.
struct ShardedLayout {
  MeshSizes mesh;
  uint64_t digest_block = kDefaultDigestBlock;
  std::map<std::string, GlobalTensor> tensors;
  std::map<int, RankContents> ranks;

  // Throws DataLoss naming `what` when the layout is malformed: boxes outside the shape, boxes
  // that overlap or leave a gap, byte ranges outside the shard, a wrong number of digests.
  static ShardedLayout Parse(const Manifest& manifest, const std::string& what);
};

// attributes as the manifest holds them ({"int": 3}, {"float": 0.5}, {"text": "x"},
// {"bytes": "<hex>"}) and back; FromJson throws DataLoss.
nlohmann::json AttributesToJson(const std::map<std::string, AttrValue>& attributes);
std::map<std::string, AttrValue> AttributesFromJson(const nlohmann::json& j);

}  // namespace cohort::checkpoint
