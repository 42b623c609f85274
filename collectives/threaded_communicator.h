// ThreadedCommunicator: runs the operations of a CPU backend, in submission order, on one worker
// thread per communicator, so every operation is asynchronous (DDP overlaps its all-reduces with
// backward) while the backend itself is written as plain calls. A backend may leave an operation
// in flight (MPI's Isend/Irecv): the worker then polls it between operations, so point-to-point
// traffic never blocks the queue. Backends implement Run().
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
  // Starts the worker. Derived constructors call it last, once Run() can be called.
  void StartWorker();
  // Stops the worker once the queue has drained; operations still in flight fail. Derived
  // destructors call it first, since Run() uses their members.
  void StopWorker();

  WorkPtr Submit(Op op) override;
  // Runs op to completion on the calling thread; for internal steps of another operation.
  void RunToCompletion(const Op& op);

 private:
  struct InFlight {
    WorkPtr work;
    std::unique_ptr<Pending> pending;
    std::chrono::steady_clock::time_point deadline;
  };

  void Loop();
  void Execute(const WorkPtr& work);
  // Tests every in-flight operation; returns whether any completed.
  bool PollInFlight();
  void AbandonInFlight(const std::string& why);
  // Verifies that every rank runs the same operation with the same shape (debug_checks).
  void CheckSameCall(const Op& op);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WorkPtr> queue_;
  std::atomic<size_t> queued_{0};
  std::atomic<bool> sleeping_{false};
  bool stop_ = false;
  std::vector<InFlight> in_flight_;  // worker thread only
  std::thread worker_;
};

}  // namespace cohort::collectives
