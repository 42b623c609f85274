// Consolidation: a sharded snapshot turned into one unsharded, data-parallel snapshot (world 1),
// what serving and a one-process resume need. The global tensors are assembled whole under their
// names (model/<name>); optimizer state saved by parameter name (optimizer/<name>/<field>) is
// renamed to the data-parallel form, optimizer/<k>/<field> with k the parameter's position in
// the model (from the "parameters" attribute the runtime saves: each stage's parameter names in
// order, stages in pipeline order); rank 0's own state (rng/..., sampler attributes) is kept.
// The result is written like any snapshot: shard, digest, manifest last, then `latest`.
// Torch-free.
#pragma once

#include <string>

#include "checkpoint/checkpointer.h"

namespace cohort::checkpoint {

struct ConsolidateResult {
  std::string source;  // the snapshot consolidated
  SavedSnapshot saved;
  uint64_t tensors = 0;
};

// Reads the sharded snapshot at source_uri (a snapshot, or a run folder: its latest) and writes
// it unsharded into out_uri (a run folder: <out_uri>/step-<N>/rank-0.h5). Throws
// InvalidArgument when the source is not sharded or out_uri already holds that step, DataLoss
// when a block read fails its digest, and what the stores throw.
ConsolidateResult ConsolidateSnapshot(const std::string& source_uri, const std::string& out_uri);

}  // namespace cohort::checkpoint
