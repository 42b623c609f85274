// manifest.json: what makes a snapshot exist. Written last, after every shard landed; it names
// each shard object with its size and digest. Layout of a run's folder in an ObjectStore:
//   <run>/step-000000000100/rank-0.h5 ... rank-<W-1>.h5
//   <run>/step-000000000100/manifest.json
//   <run>/latest                          "step-000000000100\n": the newest complete snapshot
// Steps are zero-padded to 12 digits so that keys sort by step.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cohort::checkpoint {

// Version 1: data-parallel snapshots. Version 2 adds sharded layouts (checkpoint/layout.h);
// data-parallel manifests are still written as version 1, so older cohorts keep reading them.
inline constexpr int kManifestFormatVersion = 2;
inline constexpr int kDataParallelFormatVersion = 1;
inline constexpr char kManifestName[] = "manifest.json";
inline constexpr char kLatestName[] = "latest";

struct ShardEntry {
  int rank = 0;
  std::string object;  // relative to the snapshot folder: "rank-0.h5"
  uint64_t size = 0;
  std::string digest;  // "xxh3-128:<hex>" or "sha256:<hex>"
  uint64_t tensors = 0;
  // Sharded snapshots only (else null): this rank's own tensors (rng/...) with their byte
  // offsets and block digests, and its /meta attributes. See checkpoint/layout.h.
  nlohmann::json contents = nullptr;
};

struct Manifest {
  int format_version = kDataParallelFormatVersion;
  std::string run;
  int64_t step = 0;
  int64_t epoch = 0;
  int world_size = 1;
  // How state is split across ranks: {"kind": "data_parallel"} (rank 0 holds model and
  // optimizer; every rank its RNG and sampler state). Other kinds carry their own fields.
  nlohmann::json layout = {{"kind", "data_parallel"}};
  std::string created;  // UTC, ISO 8601
  std::vector<ShardEntry> shards;

  std::string ToJson() const;
  // Throws DataLoss naming `what` when text is not a manifest this cohort can read.
  static Manifest Parse(const std::string& text, const std::string& what);
  // The entry of rank, or nullptr.
  const ShardEntry* Find(int rank) const;
  uint64_t TotalBytes() const;
};

// "step-000000000100". Throws InvalidArgument for a negative step.
std::string SnapshotName(int64_t step);
// The step of a SnapshotName(), or nullopt for anything else.
std::optional<int64_t> ParseSnapshotName(const std::string& name);
// "rank-3.h5".
std::string ShardObjectName(int rank);

}  // namespace cohort::checkpoint
