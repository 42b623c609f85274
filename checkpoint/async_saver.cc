#include "checkpoint/async_saver.h"

#include "checkpoint/save_stats.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timeline.h"

namespace cohort::checkpoint {

AsyncSaver::AsyncSaver(std::shared_ptr<Checkpointer> checkpointer)
    : checkpointer_(std::move(checkpointer)), uncaught_at_start_(std::uncaught_exceptions()) {
  if (!checkpointer_) throw InvalidArgument("AsyncSaver: no checkpointer");
  thread_ = std::thread([this] { Run(); });
}

AsyncSaver::~AsyncSaver() {
  if (std::uncaught_exceptions() > uncaught_at_start_) {
    Abandon();
    return;
  }
  try {
    Finish();
  } catch (const std::exception& e) {
    COHORT_ERROR(kCheckpoint, "a checkpoint save failed and nobody called Finish() to see it: {}",
                 e.what());
  }
}

void AsyncSaver::Save(int64_t step, Shard&& shard) {
  std::unique_lock<std::mutex> lock(mu_);
  WaitLocked(lock);
  if (stop_) throw InvalidArgument("AsyncSaver::Save after Finish()");
  shard.step = step;
  job_.emplace(std::move(shard));
  busy_ = true;
  cv_.notify_all();
}

void AsyncSaver::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  WaitLocked(lock);
}

void AsyncSaver::Finish() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !busy_; });
  stop_ = true;
  cv_.notify_all();
  lock.unlock();
  if (thread_.joinable()) thread_.join();
  lock.lock();
  WaitLocked(lock);
}

void AsyncSaver::Abandon() {
  checkpointer_->Cancel();
  try {
    Finish();
  } catch (const std::exception& e) {
    COHORT_WARN(kCheckpoint, "the snapshot in flight was left incomplete: {}", e.what());
  }
}

bool AsyncSaver::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_;
}

std::optional<SavedSnapshot> AsyncSaver::last_saved() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_saved_;
}

void AsyncSaver::WaitLocked(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [this] { return !busy_; });
  if (error_) {
    std::exception_ptr error = error_;
    error_ = nullptr;
    std::rethrow_exception(error);
  }
}

void AsyncSaver::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return job_.has_value() || stop_; });
    if (!job_) return;  // stop_ and nothing left to do
    Shard shard = std::move(*job_);
    job_.reset();
    lock.unlock();
    std::exception_ptr error;
    std::optional<SavedSnapshot> saved;
    try {
      // Encode, upload, manifest.
      timeline::Span span("checkpoint write", "checkpoint", "checkpoint writer");
      saved = checkpointer_->Save(shard);
    } catch (const std::exception& e) {
      COHORT_ERROR(kCheckpoint, "saving snapshot step {} failed: {}", shard.step, e.what());
      error = std::current_exception();
    }
    // Free the host copies here, not in the training thread.
    shard = Shard();
    lock.lock();
    if (error) error_ = error;
    // For metrics endpoints (save_stats.h).
    if (error) SaveStats::RecordFailure();
    if (saved) SaveStats::RecordSave(*saved);
    if (saved) last_saved_ = std::move(saved);
    busy_ = false;
    cv_.notify_all();
  }
}

}  // namespace cohort::checkpoint
