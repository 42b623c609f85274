// AbortableStore (auto's fallback agreement): a wait for a key another rank will never set ends
// within a slice of the abort key appearing, with that key's value (the reason); a disarmed
// store is the inner one; timeouts still name the key and the whole wait.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "collectives/abortable_store.h"
#include "collectives/store/memory_store.h"

namespace cohort::testing {
namespace {

using collectives::AbortableStore;
using collectives::MemoryStore;
using collectives::StartAborted;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

TEST(AbortableStore, AWaitEndsSoonAfterTheAbortKeyAppears) {
  auto inner = std::make_shared<MemoryStore>();
  AbortableStore store(inner, "auto/failed", 20ms);
  std::thread failer([&] {
    std::this_thread::sleep_for(100ms);
    inner->Set("auto/failed", "rank 1: cannot bind");
  });
  const auto start = Clock::now();
  try {
    store.Get("gloo/rank_1", 10s);
    ADD_FAILURE() << "Get returned";
  } catch (const StartAborted& e) {
    EXPECT_STREQ(e.what(), "rank 1: cannot bind");
  }
  EXPECT_LT(SecondsSince(start), 1.0);
  EXPECT_THROW(store.Wait({"gloo/rank_1"}, 10s), StartAborted);
  // Join's wait too (Store's four-call sequence through the sliced Get).
  EXPECT_THROW(store.Join("ok/join/", 0, 2, "n0", 10s), StartAborted);
  failer.join();
}

TEST(AbortableStore, KeysThatArriveAreReturnedAndTimeoutsNameTheWholeWait) {
  auto inner = std::make_shared<MemoryStore>();
  AbortableStore store(inner, "auto/failed", 20ms);
  std::thread setter([&] {
    std::this_thread::sleep_for(80ms);
    inner->Set("k", "v");
  });
  EXPECT_EQ(store.Get("k", 5s), "v");
  setter.join();
  try {
    store.Get("never", 200ms);
    ADD_FAILURE() << "Get returned";
  } catch (const Timeout& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("Get('never') timed out after 2"));
  }
}

TEST(AbortableStore, ADisarmedStoreIgnoresTheAbortKey) {
  auto inner = std::make_shared<MemoryStore>();
  inner->Set("auto/failed", "rank 0: old news");
  AbortableStore store(inner, "auto/failed", 20ms);
  store.Disarm();
  std::thread setter([&] {
    std::this_thread::sleep_for(100ms);
    inner->Set("k", "v");
  });
  EXPECT_EQ(store.Get("k", 5s), "v");
  setter.join();
}

}  // namespace
}  // namespace cohort::testing
