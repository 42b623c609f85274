// ProcessGroup: the communicator of a training job, built from the env contract (COHORT_*,
// torchrun's RANK/WORLD_SIZE/MASTER_*, Open MPI's env), plus the adapter from torch::Tensor to
// collectives::TensorView. CPU and CUDA tensors; a tensor that is not contiguous, or whose dtype
// no collective supports, is refused with a one-line error that says how to fix it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/store/store.h"
#include "runtime/torch_fwd.h"

namespace cohort::runtime {

// The view of t's storage that collectives operate on. what names the tensor in errors.
// Throws InvalidArgument when t is undefined, not contiguous (fix: call .contiguous()), or of a
// dtype collectives do not support (bool, complex, ...).
collectives::TensorView View(const at::Tensor& t, const std::string& what = "tensor");

// One send or receive of ProcessGroup::BatchSendRecv. The tensor must stay alive until its Work
// completes. Throws what View() throws.
collectives::P2POp SendOp(const at::Tensor& t, int dst, uint32_t tag = 0);
collectives::P2POp RecvOp(const at::Tensor& t, int src, uint32_t tag = 0);

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
  // in holds Size() * out.numel() elements; out gets slice Rank() of the reduction.
  collectives::WorkPtr ReduceScatter(const at::Tensor& in, const at::Tensor& out,
                                     collectives::ReduceOp op = collectives::ReduceOp::kSum);
  // Point-to-point; the receiver's tensor must have the sender's dtype and element count.
  collectives::WorkPtr Send(const at::Tensor& t, int dst, uint32_t tag = 0);
  collectives::WorkPtr Recv(const at::Tensor& t, int src, uint32_t tag = 0);
  // Starts every op together (Communicator::BatchSendRecv: two ranks that send to each other
  // in one batch never deadlock); returns their Works in order.
  std::vector<collectives::WorkPtr> BatchSendRecv(const std::vector<collectives::P2POp>& ops);
  void Barrier();

  // Collective (Communicator::Split): a process group over the ranks that passed the same
  // color, ordered by key, sharing this group's store; nullptr for Communicator::kNoColor.
  std::shared_ptr<ProcessGroup> Split(int color, int key, const std::string& group = "");
  // This group's name in errors ("" for the job's group) and the job-wide rank of rank r.
  const std::string& Group() const { return comm_->Group(); }
  int GlobalRank(int r) const { return comm_->GlobalRank(r); }

 private:
  std::shared_ptr<collectives::Store> store_;
  std::unique_ptr<collectives::Communicator> comm_;
};

}  // namespace cohort::runtime
