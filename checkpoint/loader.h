// Reading snapshots back: find the newest complete one (following `latest`), verify the manifest
// and the digest of every shard read, and fall back to the previous complete snapshot, with a
// warning naming what was wrong, when the newest one is corrupt.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/catalog.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"

namespace cohort::checkpoint {

struct LoadOptions {
  // The shards to read; empty reads every shard. A data-parallel resume reads rank 0 (model and
  // optimizer) and its own rank (RNG, sampler) when the old world had one.
  std::vector<int> ranks;
};

struct LoadedSnapshot {
  std::string name;  // "step-000000000100"
  std::string uri;   // of the snapshot's folder
  Manifest manifest;
  std::map<int, Shard> shards;        // by rank; their tensors view into the loaded files
  std::vector<std::string> warnings;  // newer snapshots skipped, and why
};

// Reads one snapshot. Throws DataLoss naming the object when the manifest is missing or bad, a
// shard is missing, has the wrong size or digest, or does not decode; InvalidArgument when a
// requested rank has no shard.
LoadedSnapshot LoadSnapshot(const RunDir& run, const std::string& name,
                            const LoadOptions& options = {});

// The snapshot `latest` names, else the newest complete one; when it fails to load, each older
// complete snapshot in turn (logging a warning for each one skipped). nullopt when the run has
// no complete snapshot (a fresh start). Throws DataLoss, listing every problem, when complete
// snapshots exist but none loads.
std::optional<LoadedSnapshot> LoadLatest(const RunDir& run, const LoadOptions& options = {});

// A snapshot URI (".../step-000000000100") loads exactly that snapshot; a run folder's URI
// loads its latest (as LoadLatest).
std::optional<LoadedSnapshot> LoadUri(const std::string& uri, const LoadOptions& options = {});

}  // namespace cohort::checkpoint
