// Which CUDA devices this process can use, and which one a rank takes. Without a GPU (or without a
// driver, as on the build machines) the count is 0 and the reason is one line a user can act on.
#pragma once

#include <string>

namespace cohort::collectives {

// The number of usable CUDA devices. Any runtime error (no driver: cudaErrorInsufficientDriver,
// no device, ...) counts as none. When the result is 0 and why is not null, *why gets one line
// saying what is missing.
int CudaDeviceCount(std::string* why = nullptr);

// The rank of this process on its node, from the launcher's env contract: COHORT_LOCAL_RANK,
// else LOCAL_RANK (torchrun), OMPI_COMM_WORLD_LOCAL_RANK (mpirun), SLURM_LOCALID; -1 if unset.
int LocalRankFromEnv();

// Processes on this node: COHORT_LOCAL_WORLD_SIZE, else LOCAL_WORLD_SIZE,
// OMPI_COMM_WORLD_LOCAL_SIZE, PET_NPROC_PER_NODE; -1 if unknown.
int LocalWorldSizeFromEnv();

// The device ordinal a rank uses when nothing names one: local_rank % count, or rank % count when
// the local rank is unknown (local_rank < 0). count must be positive.
int DeviceForRank(int rank, int local_rank, int count);

// The device of this process's rank `rank` on this machine (DeviceForRank over the env and the
// visible devices). Throws Unavailable, with CudaDeviceCount's reason, when there is no GPU.
int ChooseCudaDevice(int rank);

}  // namespace cohort::collectives
