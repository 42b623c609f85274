// The NCCL backend: CUDA tensors through NCCL, one CUDA stream per communicator. The calling
// thread enqueues each operation on the stream and returns at once; a progress thread polls one
// CUDA event per operation and finishes its Work in order. The same thread watches NCCL's
// asynchronous errors and each operation's timeout: either one aborts the NCCL communicator
// (ncclCommAbort, so the stream drains instead of hanging) and names the ranks to blame.
//
// Ordering with the caller's GPU work: each operation first waits (on the GPU) for everything
// issued before it to the legacy default stream, which includes every blocking stream. Work on a
// stream created with cudaStreamNonBlocking must be synchronized by the caller first. Results
// are ready on the host when Work::Wait() returns; GPU work after them can instead wait for
// stream().
//
// NCCL has no message tags: sends and receives between two ranks match in the order they are
// posted. Tags are honoured inside a BatchSendRecv (each peer's sends, and its receives, are
// posted by tag, so two batches holding the same messages match by tag in any listed order);
// separate Send and Recv calls to one peer match in call order, so they are refused with a tag
// other than 0 (never silently matched against another tag): callers issue them in the same
// order on both sides, or batch them (the pipeline schedules do).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"

// Opaque handles of nccl.h and the CUDA runtime, so that this header needs neither.
typedef struct ncclComm* ncclComm_t;
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;

namespace cohort::collectives {

class NcclCommunicator : public Communicator {
 public:
  // Joins the group, passes NCCL's unique id from rank 0 to the others through the store and
  // creates the NCCL communicator, all within config.connect_timeout, on the device that
  // ChooseCudaDevice() picks (local rank % visible GPUs). Needs config.store when Size() > 1.
  explicit NcclCommunicator(const CommConfig& config);
  // The same on CUDA device ordinal `device` (e.g. the device index of the tensors to move).
  NcclCommunicator(const CommConfig& config, int device);
  // Waits for outstanding operations (each bounded by its timeout), then destroys the NCCL
  // communicator, or aborts it when that does not finish in time.
  ~NcclCommunicator() override;

  const char* Backend() const override { return "nccl"; }
  DeviceType Devices() const override { return DeviceType::kCUDA; }

  // Empty if NCCL can run here with this config, else one line saying why not (no GPU or no
  // driver, no store for a multi-rank group, more ranks on this node than GPUs).
  static std::string UnavailableReason(const CommConfig& config);

  // The CUDA device ordinal every tensor of this communicator must be on.
  int device() const { return device_; }
  // The stream NCCL operations run on.
  cudaStream_t stream() const { return stream_; }

 protected:
  WorkPtr Submit(Op op) override;
  // One ncclGroupStart/End around the batch, so that sends and receives between two ranks in
  // either direction progress together.
  std::vector<WorkPtr> SubmitBatch(std::vector<Op> ops) override;
  // ncclCommSplit of this communicator, on the same device (collective over every rank of it).
  std::unique_ptr<Communicator> CreateGroup(const SplitInfo& info) override;
  void Validate(const Op& op) const override;
  // Aborts the NCCL communicator so that the stuck stream drains, after the base has blamed the
  // ranks that never reached the operation.
  void OnWaitTimeout(Work& work) override;

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending {
    WorkPtr work;
    cudaEvent_t done = nullptr;
    Clock::time_point submitted{};
  };

  // A group: ncclCommSplit of parent with info's color and rank as key.
  NcclCommunicator(NcclCommunicator& parent, const SplitInfo& info);
  void Init(const CommConfig& config);
  // Creates stream_, order_event_ and barrier_buf_ on device_.
  void InitResources();
  // Queues work (and its event) for the progress thread. Called with comm_mu_ held.
  void Track(const WorkPtr& work);
  // Throws InvalidArgument unless t is memory on this communicator's device.
  void CheckTensor(const TensorView& t, const Op& op) const;
  // COHORT_DEBUG_COLLECTIVES: all-gathers every rank's CallSignature of op on stream_ and
  // throws InvalidArgument naming both calls when they differ; waits (polling, until deadline)
  // with comm_mu_ held, so debug mode serializes submission. Called with comm_mu_ held.
  void CheckSameCall(const Op& op, Clock::time_point deadline);
  // Issues op's NCCL calls on stream_. Called with comm_mu_ held.
  void Enqueue(const Op& op, Clock::time_point deadline);
  // Marks the communicator aborted and calls ncclCommAbort; idempotent.
  void Abort(const std::string& why);
  // Finishes every pending operation with the communicator's error.
  void FailPending();
  // Finishes a failed front operation: blames it, aborts, fails the rest.
  void FailFront(const Pending& front, ErrorKind kind, const std::string& detail);
  void ProgressLoop();
  cudaEvent_t TakeEvent();
  void ReleaseResources() noexcept;

  int device_ = -1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  // Marks the legacy default stream's position for stream_ to wait on.
  cudaEvent_t order_event_ = nullptr;
  // One float for Barrier's all-reduce.
  void* barrier_buf_ = nullptr;
  // Size() CallSignatures for the debug check; allocated on first use.
  void* debug_buf_ = nullptr;

  // Serializes every NCCL call on comm_ (and ncclCommAbort, which frees it).
  std::mutex comm_mu_;
  std::atomic<bool> aborted_{false};

  // The progress thread's queue. Lock order: comm_mu_, then mu_.
  std::mutex mu_;
  std::condition_variable cv_;       // work arrived, or stop_
  std::condition_variable idle_cv_;  // pending_ drained
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_events_;
  bool stop_ = false;
  std::thread progress_;
};

}  // namespace cohort::collectives
