// The ordered list of backends and the choice behind COHORT_BACKEND=auto (Horovod's
// OperationManager idea): explicit, in one place, and each rejection explained.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace cohort::collectives {

struct BackendEntry {
  const char* name;
  // Empty when the backend can run here with this config, else one line saying why not.
  std::string (*unavailable)(const CommConfig& config, DeviceType devices);
  std::unique_ptr<Communicator> (*create)(const CommConfig& config);
};

// Every backend compiled into this build, in the order `auto` tries them: nccl, mpi, gloo;
// then ps, auto's fallback when parameter servers are configured.
const std::vector<BackendEntry>& Backends();

// Creates the backend named by `backend` ("auto" or a name from Backends()). With auto, NCCL
// is chosen for CUDA tensors when a GPU is present, MPI when the process was started by mpirun,
// Gloo otherwise. With COHORT_PS_SERVERS set (CPU tensors), when the chosen backend cannot start
// on any rank every rank falls back to ps together, agreeing through the store, and logs one
// line naming why (auto_fallback.h). Without servers, if the chosen backend fails to start, the
// next one is tried with a warning naming why. Throws InvalidArgument for an unknown name and
// Unavailable, listing every reason, when nothing can run.
std::unique_ptr<Communicator> CreateCommunicator(const std::string& backend,
                                                 const CommConfig& config,
                                                 DeviceType devices = DeviceType::kCPU);

// Names of the compiled-in backends, e.g. "nccl, mpi, gloo".
std::string BackendNames();

}  // namespace cohort::collectives
