// DistributedDataParallel: keeps a model's replicas in step. At construction rank 0's parameters
// (and buffers) are broadcast to every rank. During backward, gradients are packed into buckets
// in reverse parameter order (first bucket 1 MiB, then 25 MiB, as PyTorch DDP); each bucket's
// all-reduce (average) starts from the autograd hook of its last gradient, so communication
// overlaps the rest of backward; at the end of backward every bucket is waited for and the
// averaged gradients are written back to .grad. After the first step the buckets are rebuilt in
// the order gradients actually arrived (rank 0's order, broadcast).
//
// Use: construct it around the model, then train as usual:
//   DistributedDataParallel ddp(model, pg);
//   loss = criterion(model->forward(x), y); loss.backward(); optimizer.step();
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/process_group.h"
#include "runtime/torch_fwd.h"

namespace cohort::runtime {

enum class GradCompression { kNone, kFloat16, kBFloat16 };

struct DdpOptions {
  size_t first_bucket_bytes = size_t{1} << 20;  // PyTorch's first bucket: 1 MiB
  size_t bucket_bytes = size_t{25} << 20;       // then 25 MiB (bucket_cap_mb)
  // Parameters that get no gradient in a step on every rank keep their .grad untouched (as
  // PyTorch's find_unused_parameters). Without it a parameter with no gradient counts as a zero
  // gradient. Either way a step never hangs on an unused parameter.
  bool find_unused_parameters = false;
  // Send buckets as fp16/bf16 (half the bytes); floating-point f32 buckets only.
  GradCompression compression = GradCompression::kNone;
  // Broadcast buffers (batch-norm statistics) from rank 0 at construction.
  bool broadcast_buffers = true;
  // Rebuild the buckets after the first step from the order gradients arrived.
  bool rebuild_buckets = true;
};

// Measured per step (the last synchronized backward) and in total.
struct DdpStats {
  int64_t steps = 0;              // synchronized backward passes
  int buckets = 0;                // current number of buckets
  double comm_seconds = 0;        // sum of the buckets' all-reduce run times, last step
  double exposed_seconds = 0;     // time backward's end waited for communication, last step
  double total_comm_seconds = 0;  // sums over all steps
  double total_exposed_seconds = 0;
  // Share of communication time hidden behind backward: 1 - exposed / comm (over all steps).
  double OverlapFraction() const;
};

class DistributedDataParallel {
 public:
  DistributedDataParallel(std::shared_ptr<torch::nn::Module> module,
                          std::shared_ptr<ProcessGroup> pg, const DdpOptions& options = {});
  // A TorchScript model (loaded with torch::jit::load); trained in place.
  DistributedDataParallel(const torch::jit::Module& module, std::shared_ptr<ProcessGroup> pg,
                          const DdpOptions& options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // While the returned guard lives, backward only accumulates gradients locally (gradient
  // accumulation); the first backward after it ends synchronizes the accumulated sum.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(DistributedDataParallel* ddp);
    ~NoSyncGuard();
    NoSyncGuard(NoSyncGuard&& other) noexcept;
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    DistributedDataParallel* ddp_;
  };
  [[nodiscard]] NoSyncGuard NoSync();

  ProcessGroup& process_group();
  DdpStats Stats() const;
  // Bucket layout: for each bucket the parameter indices it holds (for tests and logs).
  std::vector<std::vector<size_t>> BucketLayout() const;

 private:
  class Reducer;
  std::unique_ptr<Reducer> reducer_;
};

}  // namespace cohort::runtime
