// Reading a sharded snapshot at another layout: each rank asks for the boxes of the global
// tensors it holds now (a tensor-parallel slice, a pipeline stage's parameters, or whole
// tensors), and ShardedReader assembles each from the overlapping slices the saving ranks
// wrote. It fetches only the digest blocks that hold those slices (ranged reads: GetRange on
// file://, s3:// and memory://) and verifies every block it fetched against the manifest (see
// checkpoint/layout.h), so truncation and corruption are caught without reading whole shards.
// Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "checkpoint/box.h"
#include "checkpoint/catalog.h"
#include "checkpoint/layout.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"

namespace cohort::checkpoint {

// What a rank wants: the box `box` of the global tensor `name`, which the model has as dtype
// and global_shape.
struct SliceRequest {
  std::string name;
  DType dtype = DType::kFloat32;
  Shape global_shape;
  Box box;
};

class ShardedReader {
 public:
  // Reads and checks the manifest of snapshot `name` of run. Throws DataLoss when it is
  // missing or malformed, InvalidArgument when the snapshot is not sharded.
  ShardedReader(const RunDir& run, const std::string& name);
  // As above, from a URI: a snapshot (".../step-000000000100"), or a run's folder (its `latest`,
  // else its newest complete snapshot). Throws DataLoss when the run has no complete snapshot.
  static ShardedReader Open(const std::string& uri);

  const std::string& name() const { return name_; }
  std::string uri() const { return run_.Uri(name_); }
  const Manifest& manifest() const { return manifest_; }
  const ShardedLayout& layout() const { return layout_; }
  // Whether the snapshot holds the global tensor name.
  bool Has(const std::string& name) const { return layout_.tensors.count(name) > 0; }

  // The requested box as a tensor called request.name. Throws InvalidArgument in one line
  // naming the tensor when the snapshot lacks it or its global shape or dtype differs; DataLoss
  // naming the object when a block is short (truncated) or its digest differs (corrupt).
  HostTensor Read(const SliceRequest& request);
  // The whole global tensor.
  HostTensor ReadWhole(const std::string& name);
  // The saved rank's own tensors (rng/...) and attributes, with the snapshot's step and epoch;
  // nullopt when the saving job had no such rank.
  std::optional<Shard> ReadLocal(int rank);
  // Bytes fetched from the store so far (ranged reads included).
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  // Bytes [first, end) of a stored block's array: fetches the digest blocks covering them,
  // verifies each, and returns them; *fetched_first is the array byte they start at.
  std::string Fetch(const StoredBlock& stored, uint64_t nbytes, uint64_t first, uint64_t end,
                    const std::string& tensor, uint64_t* fetched_first);
  // Once per shard object: its size against the manifest (a truncated object is named even when
  // the bytes read lie before the cut).
  void CheckObjectSize(int rank);

  std::shared_ptr<ObjectStore> owned_;  // set by Open()
  RunDir run_;
  std::string name_;
  Manifest manifest_;
  ShardedLayout layout_;
  std::set<int> sized_;
  uint64_t bytes_read_ = 0;
};

}  // namespace cohort::checkpoint
