// NcclCommunicator's failure side and its progress thread: each op's completion is an event on
// the communicator's stream, polled in submission order; the front op's failure (its stream's,
// NCCL's asynchronous error, or its timeout, counted from when it could start) aborts the NCCL
// communicator and fails every op behind it, since an aborted communicator runs nothing more.
#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <algorithm>

#include "collectives/nccl/nccl_communicator.h"
#include "common/check_cuda.h"
#include "common/log.h"
#include "common/spin.h"

namespace cohort::collectives {

void NcclCommunicator::OnWaitTimeout(Work& work) {
  // Blame first, so that the first error recorded is this Timeout naming the stuck ranks, not
  // the failure the abort causes.
  Communicator::OnWaitTimeout(work);
  Abort(work.op().Describe() + " timed out in Wait()");
}

void NcclCommunicator::Abort(const std::string& why) {
  if (aborted_.exchange(true)) return;
  COHORT_WARN(kNccl, "aborting the NCCL communicator of rank {}: {}", Rank(), why);
  {
    std::lock_guard<std::mutex> lock(comm_mu_);
    if (comm_) {
      int prev = -1;
      const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != device_ &&
                            cudaSetDevice(device_) == cudaSuccess;
      const ncclResult_t rc = ncclCommAbort(comm_);
      if (rc != ncclSuccess) {
        COHORT_WARN(kNccl, "ncclCommAbort: {}", internal::NcclErrorString(rc));
      }
      comm_ = nullptr;
      (void)cudaGetLastError();
      if (switched) (void)cudaSetDevice(prev);
    }
  }
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
}

void NcclCommunicator::FailPending() {
  std::deque<Pending> failed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed.swap(pending_);
    for (const Pending& p : failed) free_events_.push_back(p.done);
  }
  if (!failed.empty()) {
    std::exception_ptr error =
        IsBroken()
            ? BrokenError()
            : std::make_exception_ptr(PeerFailure(fmt::format(
                  "nccl communicator of rank {} was aborted before the operation ran", Rank())));
    for (const Pending& p : failed) OpFinished(*p.work, error);
  }
  idle_cv_.notify_all();
}

void NcclCommunicator::FailFront(const Pending& front, ErrorKind kind, const std::string& detail) {
  std::exception_ptr error = Blame(front.work->op(), kind, detail);
  Abort(detail);
  OpFinished(*front.work, error);
  FailPending();
}

void NcclCommunicator::ProgressLoop() {
  // Events carry their device; setting it once keeps this thread's CUDA calls on it.
  if (cudaSetDevice(device_) != cudaSuccess) (void)cudaGetLastError();
  const Work* front_work = nullptr;
  Clock::time_point front_since;
  int polls = 0;
  for (;;) {
    Pending front;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stop_, and nothing left
      front = pending_.front();
    }
    if (front.work.get() != front_work) {
      // A timeout counts from when the operation could start: after the one before it.
      front_work = front.work.get();
      front_since = Clock::now();
      polls = 0;
    }
    if (aborted_.load()) {
      FailPending();
      continue;
    }
    const cudaError_t q = cudaEventQuery(front.done);
    if (q == cudaSuccess) {
      if (aborted_.load()) {  // the abort may have cut the kernel short: the data is undefined
        FailPending();
        continue;
      }
      bool drained;
      {
        std::lock_guard<std::mutex> lock(mu_);
        pending_.pop_front();
        free_events_.push_back(front.done);
        drained = pending_.empty();
      }
      OpFinished(*front.work, nullptr);
      if (drained) idle_cv_.notify_all();
      continue;
    }
    if (q != cudaErrorNotReady) {
      (void)cudaGetLastError();
      FailFront(front, internal::KindFromCuda(q),
                fmt::format("the CUDA stream failed: {}", internal::CudaErrorString(q)));
      continue;
    }
    ncclResult_t async = ncclSuccess;
    {
      // Never wait here for a Submit() that is posting: the check can happen on the next poll.
      std::unique_lock<std::mutex> lock(comm_mu_, std::try_to_lock);
      if (lock.owns_lock() && comm_) {
        const ncclResult_t rc = ncclCommGetAsyncError(comm_, &async);
        if (rc != ncclSuccess) async = rc;
      }
    }
    if (async != ncclSuccess && async != ncclInProgress) {
      FailFront(
          front, internal::KindFromNccl(async),
          fmt::format("NCCL reported an asynchronous error: {}", internal::NcclErrorString(async)));
      continue;
    }
    const auto start = std::max(front.submitted, front_since);
    if (Clock::now() - start > front.work->op().timeout) {
      FailFront(front, ErrorKind::kTimeout,
                fmt::format("timed out after {:.1f} s", front.work->op().timeout.count() / 1000.0));
      continue;
    }
    PollBackoff(polls++);
  }
}

}  // namespace cohort::collectives
