// The gradient reducer behind DistributedDataParallel (runtime/ddp.h): buckets, autograd hooks,
// asynchronous all-reduce and the end-of-backward wait. Internal to runtime/; torch types are
// forward-declared (members of incomplete type are defined in reducer.cc).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/ddp.h"

namespace cohort::runtime {

class DistributedDataParallel::Reducer {
 public:
  // params: the model's parameters that require gradients, in the model's order.
  Reducer(std::vector<at::Tensor> params, std::shared_ptr<ProcessGroup> pg, DdpOptions options);
  ~Reducer();

  void SetSync(bool enabled) { sync_ = enabled; }
  bool sync() const { return sync_; }
  ProcessGroup& pg() { return *pg_; }
  DdpStats Stats() const;
  std::vector<std::vector<size_t>> Layout() const;

 private:
  struct Bucket;
  class Hook;
  using Clock = std::chrono::steady_clock;

  // Packs params (given in the order their gradients are expected) into buckets.
  void BuildBuckets(const std::vector<size_t>& order);
  // Autograd post-hook of parameter i's gradient accumulator: its gradient is final.
  void MarkReady(size_t i);
  // Copies the gradients of bucket b into its buffer and starts its all-reduce.
  void Launch(size_t b);
  // Runs at the end of backward: launches what is left, waits, writes gradients back.
  void Finalize();
  // The buckets' all-reduces of the step that just finished, on the timeline.
  void TraceBuckets() const;
  // After the first step: rank 0's arrival order, broadcast, becomes the bucket order.
  void RebuildFromArrivals();

  std::vector<at::Tensor> params_;
  std::shared_ptr<ProcessGroup> pg_;
  const DdpOptions options_;
  bool sync_ = true;

  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> locate_;  // param -> (bucket, slot)
  std::vector<uintptr_t> hook_keys_;
  struct Accumulators;
  std::unique_ptr<Accumulators> accumulators_;  // keeps the grad accumulators (and hooks) alive

  // Per-step state, touched only from autograd's thread (under mu_).
  mutable std::mutex mu_;
  bool in_step_ = false;
  size_t next_launch_ = 0;
  std::vector<uint8_t> ready_;
  std::vector<size_t> arrivals_;  // first step only
  bool rebuilt_ = false;
  Clock::time_point step_start_;

  DdpStats stats_;
};

}  // namespace cohort::runtime
