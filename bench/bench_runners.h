// The two sides a collectives benchmark compares: cohort's Communicator, and the same operation
// called directly on the library underneath it (MPI_Allreduce, gloo::allreduce, ...).
#pragma once

#include <memory>
#include <string>

#include "collectives/communicator.h"
#include "collectives/store/store.h"

namespace cohort::bench {

using collectives::DType;
using collectives::OpType;

// Runs one collective, synchronously, on buffers the benchmark owns.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual std::string Name() const = 0;
  // count: elements of the larger buffer (allgather's output, reducescatter's input), like
  // nccl-tests' "count". in_place follows nccl-tests' conventions.
  virtual void Run(OpType op, void* in, void* out, size_t count, DType dtype, bool in_place) = 0;
};

// cohort's side: submit and wait.
std::unique_ptr<Runner> MakeCohortRunner(collectives::Communicator& comm);

// The raw library's side for `backend` ("mpi" or "gloo"); the Gloo one connects its own context
// through store under its own prefix. Returns nullptr if that backend is not built.
std::unique_ptr<Runner> MakeRawRunner(const std::string& backend, int rank, int size,
                                      std::shared_ptr<collectives::Store> store);

}  // namespace cohort::bench
