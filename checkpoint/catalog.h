// The snapshots of a run as they are in an ObjectStore: listing, `latest`, verification,
// deletion and retention. A snapshot exists only when its manifest exists and every shard's size
// and digest match it; everything else is an incomplete (or corrupt) folder.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/manifest.h"
#include "checkpoint/store/object_store.h"

namespace cohort::checkpoint {

// A run's folder: a store and the key prefix of the folder ("" or "run7/").
struct RunDir {
  ObjectStore* store = nullptr;
  std::string prefix;

  // RunDir{store, "run7"} and RunDir{store, "run7/"} are the same folder.
  static RunDir Of(ObjectStore& store, const std::string& run);
  std::string Key(const std::string& relative) const { return prefix + relative; }
  // For messages: "file:///ckpt/run7/step-000000000100/rank-0.h5".
  std::string Uri(const std::string& relative = "") const;
};

struct SnapshotEntry {
  std::string name;  // "step-000000000100"
  int64_t step = 0;
  bool has_manifest = false;
  uint64_t bytes = 0;  // every object in the folder
};

// The snapshot folders of a run, by step ascending (complete or not).
std::vector<SnapshotEntry> ListSnapshots(const RunDir& run);
// The snapshot name `latest` holds, or nullopt when there is none (or it is not a name).
std::optional<std::string> ReadLatest(const RunDir& run);
// The complete snapshots a resume tries, in order: the one `latest` names, then older complete
// ones by step descending (never newer ones: those were left by an abandoned run that resumed
// from an earlier snapshot). Without a usable `latest`, every complete one, newest first; then
// *warning (when given) says why `latest` was passed over.
std::vector<std::string> ResumeCandidates(const RunDir& run, std::string* warning = nullptr);
// The manifest of a snapshot, nullopt when it has none. Throws DataLoss when it is unreadable.
std::optional<Manifest> ReadManifest(const RunDir& run, const std::string& name);

struct SnapshotCheck {
  std::string name;
  int64_t step = 0;
  bool complete = false;  // has a manifest
  bool ok = false;        // complete and every check passed
  std::optional<Manifest> manifest;
  std::vector<std::string> problems;  // one line each, naming the object
};

// Checks a snapshot: its manifest, then each shard's size, and with digests its digest (reads
// every byte, in bounded chunks).
SnapshotCheck CheckSnapshot(const RunDir& run, const std::string& name, bool digests);

// Checks one shard's bytes against its manifest entry; returns the problem or "" when it is fine.
std::string CheckShardBytes(const ShardEntry& entry, const std::string& bytes);

// Deletes a snapshot: its manifest first (so a crash half-way leaves an incomplete folder, never
// a complete-looking one with missing shards), then every other object in its folder.
void DeleteSnapshot(const RunDir& run, const std::string& name);

// After `newest` was completed: keeps it and the keep-1 newest complete snapshots before it,
// deletes older complete ones beyond that and every incomplete folder older than `newest`.
// keep <= 0 keeps every complete snapshot. Folders with larger steps (left by an abandoned run
// that resumed from an earlier snapshot) are not touched. Returns the deleted names.
std::vector<std::string> ApplyRetention(const RunDir& run, const std::string& newest, int keep);

// Every run folder (a prefix holding step-<N>/ folders) in a store, sorted.
std::vector<std::string> FindRunPrefixes(ObjectStore& store);

// A URI resolved to a store: a snapshot ("file:///ckpt/run7/step-000000000100"), or a folder of
// one run or of many ("file:///ckpt/run7", "s3://bucket/ckpt").
struct Location {
  std::unique_ptr<ObjectStore> store;
  std::optional<std::string> snapshot;  // set when the URI names one snapshot
  RunDir run() const { return RunDir{store.get(), ""}; }
};
// Throws what OpenObjectStore throws.
Location ResolveUri(const std::string& uri);

}  // namespace cohort::checkpoint
