// Work, and what a Wait() that times out does: the handler names the culprits, and an op the
// backend already runs ends with the backend's own error when its own deadline is that near.
#include "collectives/work.h"

#include <gtest/gtest.h>

#include <thread>

#include "collectives/threaded_communicator.h"
#include "common/error.h"

namespace cohort::testing {
namespace {

using namespace collectives;
using namespace std::chrono_literals;

// ---- Work ----

TEST(Work, WaitRethrowsTheStoredError) {
  Work w(Op{}, nullptr);
  EXPECT_FALSE(w.IsCompleted());
  EXPECT_TRUE(w.Finish(std::make_exception_ptr(PeerFailure("boom"))));
  EXPECT_FALSE(w.Finish());  // once only
  EXPECT_TRUE(w.IsCompleted());
  EXPECT_FALSE(w.IsSuccess());
  EXPECT_THROW(w.Wait(), PeerFailure);
}

TEST(Work, WaitTimeoutRunsTheHandler) {
  Op op;
  op.timeout = 50ms;
  bool called = false;
  Work w(op, [&](Work& self) {
    called = true;
    self.Finish(std::make_exception_ptr(Timeout("named the culprit")));
  });
  auto t0 = std::chrono::steady_clock::now();
  try {
    w.Wait();
    FAIL() << "Wait returned";
  } catch (const Timeout& e) {
    EXPECT_STREQ(e.what(), "named the culprit");
  }
  EXPECT_TRUE(called);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
}

TEST(Work, FinishFromAnotherThreadWakesTheWaiter) {
  Op op;
  op.timeout = 5s;
  Work w(op, nullptr);
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    w.MarkStarted();
    w.Finish();
  });
  w.Wait();
  t.join();
  EXPECT_TRUE(w.IsSuccess());
  EXPECT_GT(w.Duration().count(), 0);
}

// ---- a Wait() that times out while the backend runs the op ----

// A backend of one rank: a barrier takes 50 ms and succeeds; an all-reduce blocks until its
// own deadline (op.timeout from its start, as shared memory's waits do) and then throws its
// own Timeout, which names the cause.
class OwnDeadlineBackend : public ThreadedCommunicator {
 public:
  explicit OwnDeadlineBackend(std::chrono::milliseconds timeout)
      : ThreadedCommunicator(WithTimeout(timeout)) {
    StartWorker();
  }
  ~OwnDeadlineBackend() override { StopWorker(); }
  const char* Backend() const override { return "test"; }

  // An all-reduce queued behind a barrier: it starts 50 ms from now, and a caller's Wait()
  // cannot run it inline.
  WorkPtr QueuedAllReduce() {
    Barrier();
    return AllReduce(TensorView(&x_, 1, DType::kFloat32), ReduceOp::kSum);
  }

 protected:
  std::unique_ptr<Pending> Run(const Op& op) override {
    if (op.type == OpType::kBarrier) {
      std::this_thread::sleep_for(50ms);
      return nullptr;
    }
    std::this_thread::sleep_for(op.timeout);
    throw Timeout("peer 7 did not arrive in time (the backend's own error)");
  }

 private:
  static CommConfig WithTimeout(std::chrono::milliseconds timeout) {
    CommConfig c;
    c.timeout = timeout;
    return c;
  }
  float x_ = 1;
};

// What w's Wait(timeout) throws, and how long it took.
std::pair<std::string, std::chrono::steady_clock::duration> WaitError(
    const WorkPtr& w, std::chrono::milliseconds timeout = 0ms) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string what = "no timeout";
  try {
    w->Wait(timeout);
  } catch (const Timeout& e) {
    what = e.what();
  }
  return {what, std::chrono::steady_clock::now() - t0};
}

// The all-reduce starts 50 ms after its Wait() began, so the Wait()'s deadline passes first: it
// must let the backend end the op with its own error rather than race it with the generic
// "timed out" (which CI once saw win, and lose the cause).
TEST(Executor, AWaitTimeoutLetsARunningOpEndWithTheBackendsOwnError) {
  OwnDeadlineBackend comm(1s);
  const auto [what, took] = WaitError(comm.QueuedAllReduce());
  EXPECT_NE(what.find("peer 7 did not arrive in time"), std::string::npos) << what;
  EXPECT_GE(took, 1040ms);  // the op's own deadline, not the Wait()'s
  EXPECT_LT(took, 2s);
}

// A caller's Wait() shorter than the op's timeout is not stretched to the op's own deadline.
TEST(Executor, AShortWaitTimeoutIsNotStretched) {
  OwnDeadlineBackend comm(2s);
  const auto [what, took] = WaitError(comm.QueuedAllReduce(), 300ms);
  EXPECT_NE(what.find("timed out after"), std::string::npos) << what;
  EXPECT_LT(took, 1s);
}

}  // namespace
}  // namespace cohort::testing
