// Where this process stands in the job: rank, size and placement, read from the first source
// that is present: COHORT_*, Open MPI (mpirun), torchrun (RANK/WORLD_SIZE), Slurm; else a world
// of one. The launcher derives more (Kubernetes, PyTorchJob); workers read what it exports.
#pragma once

#include <string>

namespace cohort {

struct World {
  int rank = 0;
  int size = 1;
  int local_rank = 0;
  int local_size = 1;
  int node_rank = 0;
  int nnodes = 1;
  // Which source it came from: "cohort", "openmpi", "torchrun", "slurm" or "default".
  std::string source = "default";
};

// Throws InvalidArgument naming the variables when a source is inconsistent (rank >= size).
World DetectWorld();

}  // namespace cohort
