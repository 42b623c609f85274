// Work: the handle of one asynchronous operation (c10d's shape). The backend finishes it exactly
// once, with or without an error; Wait() rethrows the error.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>

#include "collectives/op.h"

namespace cohort::collectives {

class Work {
 public:
  using Clock = std::chrono::steady_clock;
  // Called by Wait() when its deadline passes and the op is still running; it must finish the
  // work (typically with a Timeout that names the ranks that never arrived).
  using TimeoutHandler = std::function<void(Work&)>;

  Work(Op op, TimeoutHandler on_timeout);
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // Blocks until the op completes and rethrows its error, if any. A zero timeout means the op's
  // own timeout, counted from this call. When it passes, the communicator's timeout handler
  // names the culprits and the error is thrown.
  void Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

  // Blocks until the op completes or deadline passes, whichever is first, and returns whether it
  // completed. Neither throws nor runs the timeout handler: for a handler that lets the backend
  // finish the op with its own error first.
  bool WaitUntil(Clock::time_point deadline);
  // True once the op finished, successfully or not; never blocks.
  bool IsCompleted() const { return done_.load(std::memory_order_acquire); }

  // True when finished without an error.
  bool IsSuccess() const;

  // Time from the start of execution to completion; zero until both happened.
  std::chrono::nanoseconds Duration() const;
  // When execution started and finished (steady_clock: CLOCK_MONOTONIC, the timeline's clock);
  // the epoch until they happened.
  std::pair<Clock::time_point, Clock::time_point> Times() const;

  // The stored error, or nullptr.
  std::exception_ptr Error() const;

  const Op& op() const { return op_; }

  // For backends: Wait() first offers the op to run_inline, which may execute it on the calling
  // thread (when it is next in line and nothing else runs) and returns whether it did. Set it
  // before the Work is shared.
  void SetInlineRunner(std::function<bool(Work&)> run_inline) {
    run_inline_ = std::move(run_inline);
  }

  // For backends: the op begins executing now.
  void MarkStarted();
  // For backends: completes the work, once. Returns false if it was already finished.
  bool Finish(std::exception_ptr error = nullptr);

 private:
  const Op op_;
  TimeoutHandler on_timeout_;
  std::function<bool(Work&)> run_inline_;
  std::atomic<bool> done_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::exception_ptr error_;
  Clock::time_point started_{};
  Clock::time_point finished_{};
};

using WorkPtr = std::shared_ptr<Work>;

}  // namespace cohort::collectives
