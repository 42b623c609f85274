#include "collectives/threaded_communicator.h"

#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "common/log.h"
#include "common/spin.h"

namespace cohort::collectives {
namespace {

using Clock = std::chrono::steady_clock;

// While operations are in flight and nothing is queued, the worker polls them this often once
// it has stopped spinning.
constexpr std::chrono::microseconds kPollInterval{100};

// What the debug check compares across ranks.
struct CallSignature {
  uint64_t seq;
  uint64_t count;
  uint8_t type;
  uint8_t dtype;
  uint8_t reduce;
  uint8_t pad;
  int32_t peer;
};

std::string SignatureText(const CallSignature& s) {
  Op o;
  o.type = static_cast<OpType>(s.type);
  o.seq = s.seq;
  o.reduce = static_cast<ReduceOp>(s.reduce);
  o.peer = s.peer;
  o.in = TensorView(nullptr, s.count, static_cast<DType>(s.dtype));
  o.out = o.in;
  return o.Describe();
}

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
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(work);
    queued_.fetch_add(1, std::memory_order_release);
  }
  // The worker spins a little after each op; wake it with a syscall only if it went to sleep.
  if (sleeping_.load(std::memory_order_acquire)) cv_.notify_one();
  return work;
}

void ThreadedCommunicator::Loop() {
  auto has_queued = [this] { return queued_.load(std::memory_order_acquire) > 0; };
  for (;;) {
    if (!in_flight_.empty()) {
      // Poll in-flight operations until new work arrives; spin while they make progress, then
      // back off to kPollInterval.
      auto idle_since = Clock::now();
      while (!in_flight_.empty() && !has_queued()) {
        if (PollInFlight()) idle_since = Clock::now();
        if (SpinUntil(has_queued, std::chrono::microseconds(20))) break;
        if (Clock::now() - idle_since > std::chrono::milliseconds(2)) {
          std::unique_lock<std::mutex> lock(mu_);
          if (stop_) break;
          sleeping_.store(true, std::memory_order_release);
          cv_.wait_for(lock, kPollInterval, [this] { return stop_ || !queue_.empty(); });
          sleeping_.store(false, std::memory_order_release);
        }
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) break;
      }
    } else {
      SpinUntil(has_queued);
    }
    WorkPtr work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (in_flight_.empty()) {
        sleeping_.store(true, std::memory_order_release);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        sleeping_.store(false, std::memory_order_release);
      }
      if (queue_.empty()) {
        if (!stop_) continue;
        lock.unlock();
        AbandonInFlight("the communicator was destroyed while it was pending");
        return;
      }
      work = std::move(queue_.front());
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_release);
    }
    Execute(work);
    PollInFlight();
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
        error = Blame(f.work->op(), ErrorKind::kTimeout,
                      fmt::format("timed out after {:.1f} s",
                                  f.work->op().timeout.count() / 1000.0));
        done = true;
      }
    } catch (const std::exception& e) {
      error = Blame(f.work->op(), Classify(e), e.what());
      done = true;
    }
    if (done) {
      OpFinished(*f.work, error);
      in_flight_.erase(in_flight_.begin() + static_cast<std::ptrdiff_t>(i));
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

ErrorKind ThreadedCommunicator::Classify(const std::exception& e) const {
  if (auto* ce = dynamic_cast<const cohort::Error*>(&e)) return ce->kind();
  return ErrorKind::kPeerFailure;
}

void ThreadedCommunicator::CheckSameCall(const Op& op) {
  CallSignature mine{};
  mine.seq = op.seq;
  mine.count = op.type == OpType::kBroadcast ? op.out.count : op.in.count;
  mine.type = static_cast<uint8_t>(op.type);
  mine.dtype = static_cast<uint8_t>(op.in.dtype);
  mine.reduce = static_cast<uint8_t>(op.reduce);
  mine.peer = op.peer;
  if (op.type == OpType::kBarrier) mine.count = 0;
  std::vector<CallSignature> all(Size());
  Op gather;
  gather.type = OpType::kAllGather;
  gather.in = TensorView(&mine, sizeof(mine), DType::kUInt8);
  gather.out = TensorView(all.data(), sizeof(mine) * Size(), DType::kUInt8);
  gather.timeout = op.timeout;
  gather.seq = op.seq;
  RunToCompletion(gather);
  for (int r = 0; r < Size(); ++r) {
    if (std::memcmp(&all[r], &mine, sizeof(mine)) != 0) {
      throw InvalidArgument(fmt::format(
          "ranks called different operations: rank {} called {} but rank {} called {}", Rank(),
          SignatureText(mine), r, SignatureText(all[r])));
    }
  }
}

}  // namespace cohort::collectives
