// ThreadedCommunicator: runs the operations of a CPU backend, in submission order, on one worker
// thread per communicator, so every operation is asynchronous (DDP overlaps its all-reduces with
// backward) while the backend itself is written as plain calls. Two refinements:
// - Wait() on an operation that is next in line while the worker is idle runs it on the waiting
//   thread: a small blocking collective then costs no thread hand-off (the worker leaves a new
//   op alone for kInlineGrace, and stops being woken during runs of such synchronous use).
//   Meanwhile the worker watches it, and calls OnInlineStuck() if it outlives its timeout.
// - A backend may leave an operation in flight (MPI's Isend/Irecv): the worker polls it between
//   operations, so point-to-point traffic never blocks the queue.
// Backends are called by one thread at a time. Backends implement Run().
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "collectives/communicator.h"

namespace cohort::collectives {

class ThreadedCommunicator : public Communicator {
 public:
  explicit ThreadedCommunicator(const CommConfig& config);
  ~ThreadedCommunicator() override;

  // An operation a backend started and left in flight. Used on the worker thread only.
  class Pending {
   public:
    virtual ~Pending() = default;
    // True once complete; throws on failure. Never blocks.
    virtual bool Test() = 0;
    // Abandons the operation (timeout, or shutdown); Test() is not called again.
    virtual void Cancel() {}
  };

 protected:
  // Executes op on the worker thread. Returns nullptr when op is complete, or a Pending for an
  // operation left in flight. Throws on failure; must honour op.timeout where it blocks.
  virtual std::unique_ptr<Pending> Run(const Op& op) = 0;
  // Maps an exception thrown by Run() or Pending::Test() to the kind of error to report
  // (default: cohort::Error keeps its kind, anything else is a peer failure).
  virtual ErrorKind Classify(const std::exception& e) const;
  // Called on the worker thread when an op that a caller runs inline is still running at its
  // timeout. Backends whose calls honour op.timeout themselves need nothing (the default);
  // one whose calls cannot time out (MPI) must end the process there.
  virtual void OnInlineStuck(const Op& op) {}
  // Starts the worker. Derived constructors call it last, once Run() can be called.
  void StartWorker();
  // Stops the worker once the queue has drained; operations still in flight fail. Derived
  // destructors call it first, since Run() uses their members.
  void StopWorker();

  WorkPtr Submit(Op op) override;
  // A Wait() that times out on an op the worker (or an inline caller) already runs first gives
  // Run() until the op's own deadline, counted from its start (a little after the Wait()'s), plus
  // kOwnDeadlineSlack, to end it with the backend's error: that names the cause better (the
  // shared-memory peer, by its local rank; the socket that broke) than the generic verdict does,
  // and the two would otherwise race. Only when that deadline is near (within a tenth of the
  // timeout): a caller's shorter Wait() timeout, an op that started long after
  // the Wait() began, or one still queued, is blamed at once. Backends whose calls cannot time
  // out (MPI) skip this and call Communicator::OnWaitTimeout().
  void OnWaitTimeout(Work& work) override;
  // Runs op to completion on the calling thread; for internal steps of another operation.
  void RunToCompletion(const Op& op);

 private:
  struct InFlight {
    WorkPtr work;
    std::unique_ptr<Pending> pending;
    std::chrono::steady_clock::time_point deadline;
  };

  void Loop();
  // Waits for queued work, polling in-flight operations meanwhile.
  void PollUntilQueued();
  // Runs work on the calling thread if it is next and nothing else runs; Work::Wait() calls it.
  bool TryRunInline(Work& work);
  // These three need exec_mu_.
  void Execute(const WorkPtr& work);
  bool PollInFlight();  // returns whether any operation completed
  void AbandonInFlight(const std::string& why);
  // Verifies that every rank runs the same operation with the same shape (debug_checks).
  void CheckSameCall(const Op& op);

  // Held by whichever thread executes or polls operations: the worker, or a caller running one
  // inline. Taken before mu_ when both are needed.
  std::mutex exec_mu_;
  std::vector<InFlight> in_flight_;  // guarded by exec_mu_
  std::atomic<size_t> in_flight_count_{0};

  std::mutex mu_;  // guards queue_, stop_ and inline_
  std::condition_variable cv_;
  struct Queued {
    WorkPtr work;
    std::chrono::steady_clock::time_point submitted;
  };
  std::deque<Queued> queue_;
  std::atomic<size_t> queued_{0};
  std::atomic<bool> sleeping_{false};
  bool stop_ = false;
  WorkPtr inline_;                     // the op a caller is running inline, watched by the worker
  std::atomic<int> inline_streak_{0};  // ops run inline in a row (see kLazyStreak)
  std::chrono::steady_clock::time_point last_submit_;
  std::chrono::steady_clock::time_point inline_deadline_;
  std::thread worker_;
};

}  // namespace cohort::collectives
