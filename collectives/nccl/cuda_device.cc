#include "collectives/nccl/cuda_device.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "common/check_cuda.h"
#include "common/env.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

// The first of vars that is set, as an integer; -1 when none is.
int FirstSet(std::initializer_list<const env::Var*> vars) {
  for (const env::Var* v : vars) {
    if (v->IsSet()) return static_cast<int>(v->Int(-1));
  }
  return -1;
}

}  // namespace

int CudaDeviceCount(std::string* why) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    // Without a driver the runtime returns cudaErrorInsufficientDriver (35), not
    // cudaErrorNoDevice, and leaves count unwritten.
    (void)cudaGetLastError();
    if (why) {
      *why = fmt::format(
          "no usable CUDA GPU: cudaGetDeviceCount failed: {}; check that this machine has an "
          "NVIDIA GPU and a driver for CUDA {}.{} (nvidia-smi)",
          internal::CudaErrorString(rc), CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    }
    return 0;
  }
  if (count <= 0) {
    if (why) {
      *why =
          "no CUDA GPU is visible to this process (cudaGetDeviceCount returned 0); check "
          "CUDA_VISIBLE_DEVICES and nvidia-smi";
    }
    return 0;
  }
  return count;
}

int LocalRankFromEnv() {
  return FirstSet(
      {&env::kLocalRank, &env::kTorchLocalRank, &env::kOmpiLocalRank, &env::kSlurmLocalId});
}

int LocalWorldSizeFromEnv() {
  return FirstSet({&env::kLocalWorldSize, &env::kTorchLocalWorldSize, &env::kOmpiLocalSize,
                   &env::kPetNprocPerNode});
}

int DeviceForRank(int rank, int local_rank, int count) {
  if (count <= 0) throw InvalidArgument("DeviceForRank: the device count must be positive");
  const int r = local_rank >= 0 ? local_rank : rank;
  return (r < 0 ? 0 : r) % count;
}

int ChooseCudaDevice(int rank) {
  std::string why;
  const int count = CudaDeviceCount(&why);
  if (count == 0) throw Unavailable(why);
  return DeviceForRank(rank, LocalRankFromEnv(), count);
}

}  // namespace cohort::collectives
