#include "collectives/threaded_communicator.h"

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "collectives/call_check.h"
#include "common/log.h"
#include "common/spin.h"

namespace cohort::collectives {
namespace {

using Clock = std::chrono::steady_clock;

// While operations are in flight and nothing is queued, the worker polls them this often once
// it has stopped spinning.
constexpr std::chrono::microseconds kPollInterval{100};
// How long a submitted op is left to a caller who may Wait() for it and run it inline, before
// the worker takes it. Asynchronous ops (DDP's buckets, milliseconds each) start this much later.
constexpr std::chrono::microseconds kInlineGrace{50};
// After this many ops in a row run inline by their callers, Submit() stops waking the worker,
// which then polls every kLazyPeriod until an op goes unwaited or nothing is submitted for
// kLazyIdle. Synchronous use then costs no thread wake-ups; asynchronous use at most one
// kLazyPeriod delay before the mode flips back.
constexpr int kLazyStreak = 8;
constexpr std::chrono::milliseconds kLazyPeriod{1};
constexpr std::chrono::milliseconds kLazyIdle{100};
// How often an idle worker wakes to check the deadline of an op a caller runs inline.
constexpr std::chrono::milliseconds kWatchdogPeriod{1000};
// How long past an op's own deadline a timed-out Wait() lets the backend end it (see
// OnWaitTimeout): a few of the backends' check periods (shared memory looks every 50 ms).
constexpr std::chrono::milliseconds kOwnDeadlineSlack{250};

}  // namespace

ThreadedCommunicator::ThreadedCommunicator(const CommConfig& config) : Communicator(config) {}

ThreadedCommunicator::~ThreadedCommunicator() { StopWorker(); }

void ThreadedCommunicator::StartWorker() {
  worker_ = std::thread([this] { Loop(); });
}

void ThreadedCommunicator::StopWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

WorkPtr ThreadedCommunicator::Submit(Op op) {
  auto work = NewWork(std::move(op));
  work->SetInlineRunner([this](Work& w) { return TryRunInline(w); });
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_submit_ = Clock::now();
    queue_.push_back({work, last_submit_});
    queued_.fetch_add(1, std::memory_order_release);
  }
  // Wake the worker only if it sleeps, and not while the caller runs every op inline itself
  // (then the worker's own wake-ups cost more than the op: it polls every kLazyPeriod instead).
  if (inline_streak_.load(std::memory_order_relaxed) < kLazyStreak &&
      sleeping_.load(std::memory_order_acquire)) {
    cv_.notify_one();
  }
  return work;
}

bool ThreadedCommunicator::TryRunInline(Work& w) {
  std::unique_lock<std::mutex> exec(exec_mu_, std::try_to_lock);
  if (!exec.owns_lock()) return false;
  WorkPtr work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.empty() || queue_.front().work.get() != &w) return false;
    work = std::move(queue_.front().work);
    queue_.pop_front();
    queued_.fetch_sub(1, std::memory_order_release);
    inline_ = work;
    inline_deadline_ = Clock::now() + work->op().timeout;
  }
  Execute(work);
  exec.unlock();
  // The streak that turns off wake-on-submit starts now: the worker, asleep for up to
  // kWatchdogPeriod, must switch to polling every kLazyPeriod.
  const bool streak_starts =
      inline_streak_.fetch_add(1, std::memory_order_relaxed) + 1 == kLazyStreak;
  bool more;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inline_.reset();
    more = streak_starts || !queue_.empty() || in_flight_count_.load() > 0;
  }
  // Work submitted meanwhile, or a posted recv to poll, is the worker's from here on.
  if (more) cv_.notify_one();
  return true;
}

void ThreadedCommunicator::PollUntilQueued() {
  auto has_queued = [this] { return queued_.load(std::memory_order_acquire) > 0; };
  auto idle_since = Clock::now();
  while (in_flight_count_.load() > 0 && !has_queued()) {
    {
      std::unique_lock<std::mutex> exec(exec_mu_, std::try_to_lock);
      if (exec.owns_lock() && PollInFlight()) idle_since = Clock::now();
    }
    if (SpinUntil(has_queued, std::chrono::microseconds(20))) return;
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_) return;
    // Spin while operations complete; once they stall, poll every kPollInterval.
    if (Clock::now() - idle_since > std::chrono::milliseconds(2)) {
      sleeping_.store(true, std::memory_order_release);
      cv_.wait_for(lock, kPollInterval, [this] { return stop_ || !queue_.empty(); });
      sleeping_.store(false, std::memory_order_release);
    }
  }
}

void ThreadedCommunicator::Loop() {
  bool ran = false;
  for (;;) {
    if (in_flight_count_.load() > 0) {
      PollUntilQueued();
    } else if (ran) {
      // Back-to-back asynchronous ops (DDP's buckets) arrive within microseconds.
      SpinUntil([this] { return queued_.load(std::memory_order_acquire) > 0; });
    }
    ran = false;
    std::unique_lock<std::mutex> exec(exec_mu_, std::defer_lock);
    WorkPtr work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      for (;;) {
        // A caller that waits right after submitting runs the op itself, with no hand-off;
        // leave it kInlineGrace to do so before racing it for the op.
        const auto now = Clock::now();
        const bool ripe =
            !queue_.empty() && (stop_ || now >= queue_.front().submitted + kInlineGrace);
        // try_lock: a caller running an op inline holds exec_mu_; never queue up behind it.
        if (ripe && exec.try_lock()) {
          work = std::move(queue_.front().work);
          queue_.pop_front();
          queued_.fetch_sub(1, std::memory_order_release);
          inline_streak_.store(0, std::memory_order_relaxed);  // nobody waited: wake on submit
          break;
        }
        if (queue_.empty() && stop_) {
          lock.unlock();
          exec.lock();
          AbandonInFlight("the communicator was destroyed while it was pending");
          return;
        }
        if (queue_.empty() && in_flight_count_.load() > 0) break;  // go and poll them
        // Idle, an op in its grace period, or a caller running one inline: sleep until notified,
        // waking to take a ripe op or to watch the inline one.
        auto until = now + kWatchdogPeriod;
        if (inline_streak_.load(std::memory_order_relaxed) >= kLazyStreak) {
          if (now - last_submit_ > kLazyIdle) {
            inline_streak_.store(0, std::memory_order_relaxed);  // quiet: back to wake-on-submit
          } else {
            until = now + kLazyPeriod;
          }
        }
        if (!queue_.empty() && !ripe) until = queue_.front().submitted + kInlineGrace;
        if (inline_ && inline_deadline_ < until) until = inline_deadline_;
        sleeping_.store(true, std::memory_order_release);
        cv_.wait_until(lock, until);
        sleeping_.store(false, std::memory_order_release);
        if (inline_ && Clock::now() >= inline_deadline_ && !inline_->IsCompleted()) {
          // The caller's thread is still inside the backend past the op's timeout.
          WorkPtr stuck = std::move(inline_);
          lock.unlock();
          OnInlineStuck(stuck->op());
          lock.lock();
        }
      }
    }
    if (!work) continue;
    Execute(work);
    PollInFlight();
    ran = true;
  }
}

void ThreadedCommunicator::Execute(const WorkPtr& work) {
  const Op& op = work->op();
  if (IsBroken()) {
    work->Finish(BrokenError());
    return;
  }
  if (work->IsCompleted()) return;  // a Wait() timed out before the op could start
  OpStarted(*work);
  try {
    if (config().debug_checks && op.IsCollective() && Size() > 1) CheckSameCall(op);
    auto pending = Run(op);
    if (pending) {
      in_flight_.push_back({work, std::move(pending), Clock::now() + op.timeout});
      in_flight_count_.store(in_flight_.size());
      return;
    }
    OpFinished(*work, nullptr);
  } catch (const std::exception& e) {
    OpFinished(*work, Blame(op, Classify(e), e.what()));
  }
}

bool ThreadedCommunicator::PollInFlight() {
  bool progressed = false;
  const auto now = Clock::now();
  for (size_t i = 0; i < in_flight_.size();) {
    InFlight& f = in_flight_[i];
    std::exception_ptr error;
    bool done = false;
    try {
      done = f.pending->Test();
      if (!done && now >= f.deadline) {
        f.pending->Cancel();
        error =
            Blame(f.work->op(), ErrorKind::kTimeout,
                  fmt::format("timed out after {:.1f} s", f.work->op().timeout.count() / 1000.0));
        done = true;
      }
    } catch (const std::exception& e) {
      error = Blame(f.work->op(), Classify(e), e.what());
      done = true;
    }
    if (done) {
      OpFinished(*f.work, error);
      in_flight_.erase(in_flight_.begin() + static_cast<std::ptrdiff_t>(i));
      in_flight_count_.store(in_flight_.size());
      progressed = true;
    } else {
      ++i;
    }
  }
  return progressed;
}

void ThreadedCommunicator::AbandonInFlight(const std::string& why) {
  for (auto& f : in_flight_) {
    f.pending->Cancel();
    f.work->Finish(std::make_exception_ptr(
        Unavailable(fmt::format("{} {}: {}", Backend(), f.work->op().Describe(), why))));
  }
  in_flight_.clear();
  in_flight_count_.store(0);
}

void ThreadedCommunicator::RunToCompletion(const Op& op) {
  auto pending = Run(op);
  const auto deadline = Clock::now() + op.timeout;
  while (pending && !pending->Test()) {
    if (Clock::now() >= deadline) {
      pending->Cancel();
      throw Timeout(fmt::format("timed out after {:.1f} s", op.timeout.count() / 1000.0));
    }
    CpuRelax();
  }
}

void ThreadedCommunicator::OnWaitTimeout(Work& work) {
  const Clock::time_point started = work.Times().first;
  if (started != Clock::time_point{}) {
    const auto own = started + work.op().timeout;  // Run()'s deadline
    if (own <= Clock::now() + work.op().timeout / 10 && work.WaitUntil(own + kOwnDeadlineSlack)) {
      return;  // Run() ended it, with its own error or none
    }
  }
  Communicator::OnWaitTimeout(work);
}

ErrorKind ThreadedCommunicator::Classify(const std::exception& e) const {
  if (auto* ce = dynamic_cast<const cohort::Error*>(&e)) return ce->kind();
  return ErrorKind::kPeerFailure;
}

void ThreadedCommunicator::CheckSameCall(const Op& op) {
  std::vector<CallSignature> all(Size());
  all[Rank()] = SignatureOf(op);
  Op gather;
  gather.type = OpType::kAllGather;
  gather.in = TensorView(&all[Rank()], sizeof(CallSignature), DType::kUInt8);
  gather.out = TensorView(all.data(), sizeof(CallSignature) * Size(), DType::kUInt8);
  gather.timeout = op.timeout;
  gather.seq = op.seq;
  RunToCompletion(gather);
  collectives::CheckSameCall(all.data(), Size(), Rank());
}

}  // namespace cohort::collectives
