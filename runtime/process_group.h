// ProcessGroup: the communicator of a training job, built from the env contract (COHORT_*,
// torchrun's RANK/WORLD_SIZE/MASTER_*, Open MPI's env), plus the adapter from torch::Tensor to
// collectives::TensorView. CPU and CUDA tensors; a tensor that is not contiguous, or whose dtype
// no collective supports, is refused with a one-line error that says how to fix it.
#pragma once

#include <memory>
#include <string>

#include "collectives/communicator.h"
#include "collectives/store/store.h"
#include "runtime/torch_fwd.h"

namespace cohort::runtime {

// The view of t's storage that collectives operate on. what names the tensor in errors.
// Throws InvalidArgument when t is undefined, not contiguous (fix: call .contiguous()), or of a
// dtype collectives do not support (bool, complex, ...).
collectives::TensorView View(const at::Tensor& t, const std::string& what = "tensor");

struct ProcessGroupOptions {
  // "auto", "nccl", "mpi", "gloo"; empty: COHORT_BACKEND, else auto.
  std::string backend;
  // The device kind of the tensors the group will move; decides what `auto` picks.
  collectives::DeviceType devices = collectives::DeviceType::kCPU;
  // Communicator name (keys on the store); two groups of one job need different names.
  std::string name = "world";
};

class ProcessGroup {
 public:
  // Reads the world (common/world.h), connects to the store (collectives/store/store_from_env.h;
  // a world of one without any store env gets an in-memory store) and creates the backend.
  // Also keeps freed memory in this process's heap (common/heap.h) unless COHORT_MALLOC_TUNE=0.
  static std::shared_ptr<ProcessGroup> FromEnv(const ProcessGroupOptions& options = {});

  ProcessGroup(std::shared_ptr<collectives::Store> store,
               std::unique_ptr<collectives::Communicator> comm);
  ~ProcessGroup();

  int Rank() const { return comm_->Rank(); }
  int Size() const { return comm_->Size(); }
  const char* Backend() const { return comm_->Backend(); }
  collectives::Communicator& comm() { return *comm_; }
  // The rendezvous store (heartbeats, metrics, small agreements).
  const std::shared_ptr<collectives::Store>& store() const { return store_; }

  // Tensor forms of the collectives; the tensors must stay alive until the Work completes.
  collectives::WorkPtr AllReduce(const at::Tensor& t,
                                 collectives::ReduceOp op = collectives::ReduceOp::kSum);
  collectives::WorkPtr Broadcast(const at::Tensor& t, int root);
  // out holds Size() * in.numel() elements, in rank order.
  collectives::WorkPtr AllGather(const at::Tensor& in, const at::Tensor& out);
  void Barrier();

 private:
  std::shared_ptr<collectives::Store> store_;
  std::unique_ptr<collectives::Communicator> comm_;
};

}  // namespace cohort::runtime
