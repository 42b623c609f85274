#include "common/world.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/env.h"
#include "common/error.h"

namespace cohort {
namespace {

void Validate(const World& w, const char* rank_var, const char* size_var) {
  if (w.size < 1 || w.rank < 0 || w.rank >= w.size) {
    throw InvalidArgument(
        fmt::format("{}={} and {}={} do not describe a rank in a world; the "
                    "rank must be in 0..size-1",
                    rank_var, w.rank, size_var, w.size));
  }
  if (w.local_size < 1 || w.local_rank < 0 || w.local_rank >= w.local_size) {
    throw InvalidArgument(fmt::format("local rank {} is outside the local world of {} ({})",
                                      w.local_rank, w.local_size, w.source));
  }
}

}  // namespace

World DetectWorld() {
  World w;
  if (env::kRank.IsSet() || env::kWorldSize.IsSet()) {
    w.source = "cohort";
    w.rank = static_cast<int>(env::kRank.Int(0));
    w.size = static_cast<int>(env::kWorldSize.Int(1));
    w.local_rank = static_cast<int>(env::kLocalRank.Int(w.rank));
    w.local_size = static_cast<int>(env::kLocalWorldSize.Int(w.size));
    w.node_rank = static_cast<int>(env::kNodeRank.Int(0));
    w.nnodes = static_cast<int>(env::kNNodes.Int(1));
    Validate(w, env::kRank.name(), env::kWorldSize.name());
  } else if (env::kOmpiSize.IsSet()) {
    w.source = "openmpi";
    w.rank = static_cast<int>(env::kOmpiRank.Int(0));
    w.size = static_cast<int>(env::kOmpiSize.Int(1));
    w.local_rank = static_cast<int>(env::kOmpiLocalRank.Int(w.rank));
    w.local_size = static_cast<int>(env::kOmpiLocalSize.Int(w.size));
    w.nnodes = (w.size + w.local_size - 1) / w.local_size;
    w.node_rank = w.rank / w.local_size;
    Validate(w, env::kOmpiRank.name(), env::kOmpiSize.name());
  } else if (env::kTorchWorldSize.IsSet()) {
    w.source = "torchrun";
    w.rank = static_cast<int>(env::kTorchRank.Int(0));
    w.size = static_cast<int>(env::kTorchWorldSize.Int(1));
    w.local_rank = static_cast<int>(env::kTorchLocalRank.Int(w.rank));
    w.local_size = static_cast<int>(env::kTorchLocalWorldSize.Int(w.size));
    Validate(w, env::kTorchRank.name(), env::kTorchWorldSize.name());
  } else if (env::kSlurmNTasks.IsSet()) {
    w.source = "slurm";
    w.rank = static_cast<int>(env::kSlurmProcId.Int(0));
    w.size = static_cast<int>(env::kSlurmNTasks.Int(1));
    w.local_rank = static_cast<int>(env::kSlurmLocalId.Int(0));
    w.node_rank = static_cast<int>(env::kSlurmNodeId.Int(0));
    w.nnodes = static_cast<int>(env::kSlurmNNodes.Int(1));
    w.local_size = std::max(1, w.size / std::max(1, w.nnodes));
    Validate(w, env::kSlurmProcId.name(), env::kSlurmNTasks.name());
  }
  return w;
}

}  // namespace cohort
