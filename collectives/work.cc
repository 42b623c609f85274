#include "collectives/work.h"

#include "common/error.h"
#include "common/spin.h"

namespace cohort::collectives {

Work::Work(Op op, TimeoutHandler on_timeout)
    : op_(std::move(op)), on_timeout_(std::move(on_timeout)) {}

void Work::Wait(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) timeout = op_.timeout;
  const auto deadline = Clock::now() + timeout;
  // Running the op right here saves two thread hand-offs, most of the cost of a small op.
  if (!IsCompleted() && run_inline_) run_inline_(*this);
  // Short operations finish within microseconds: spin briefly before paying for a futex sleep
  // and the wake-up of this thread.
  if (!SpinUntil([this] { return IsCompleted(); })) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline, [this] { return IsCompleted(); })) {
      lock.unlock();
      if (on_timeout_) on_timeout_(*this);
      // The handler finishes the work; if it did not, say what timed out ourselves.
      Finish(std::make_exception_ptr(cohort::Timeout(op_.Describe() + " timed out after " +
                                                     std::to_string(timeout.count()) + " ms")));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) std::rethrow_exception(error_);
}

bool Work::WaitUntil(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline, [this] { return IsCompleted(); });
}

bool Work::IsSuccess() const {
  std::lock_guard<std::mutex> lock(mu_);
  return IsCompleted() && !error_;
}

std::chrono::nanoseconds Work::Duration() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!IsCompleted() || started_ == Clock::time_point{}) return std::chrono::nanoseconds(0);
  return finished_ - started_;
}

std::pair<Work::Clock::time_point, Work::Clock::time_point> Work::Times() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {started_, finished_};
}

std::exception_ptr Work::Error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Work::MarkStarted() {
  std::lock_guard<std::mutex> lock(mu_);
  started_ = Clock::now();
}

bool Work::Finish(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (IsCompleted()) return false;
    error_ = std::move(error);
    finished_ = Clock::now();
    if (started_ == Clock::time_point{}) started_ = finished_;
    done_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  return true;
}

}  // namespace cohort::collectives
