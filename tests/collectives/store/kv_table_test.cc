#include "collectives/store/kv_table.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "common/error.h"
#include "tests/collectives/store/store_test_util.h"

namespace cohort::collectives {
namespace {

using testing::Clock;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::MillisSince;
using testing::ThrownMessage;
using Status = KvTable::WatchStatus;
using std::chrono::milliseconds;

// Records the single result of a watch; fails the test if a watch fires twice.
struct Recorder {
  std::promise<KvTable::WatchResult> promise;
  std::atomic<int> calls{0};
  KvTable::WatchCallback Callback() {
    return [this](KvTable::WatchResult r) {
      if (calls.fetch_add(1) == 0) promise.set_value(std::move(r));
    };
  }
  KvTable::WatchResult Wait() {
    auto f = promise.get_future();
    EXPECT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "watch never fired";
    return f.get();
  }
};

TEST(KvTableTest, SetGetOverwriteDelete) {
  KvTable t;
  EXPECT_EQ(t.Get("k"), std::nullopt);
  t.Set("k", "v1");
  EXPECT_EQ(t.Get("k"), "v1");
  t.Set("k", "v2");
  EXPECT_EQ(t.Get("k"), "v2");
  t.Set("empty", "");
  EXPECT_EQ(t.Get("empty"), "");
  EXPECT_EQ(t.Size(), 2u);
  EXPECT_TRUE(t.Delete("k"));
  EXPECT_FALSE(t.Delete("k"));
  EXPECT_EQ(t.Get("k"), std::nullopt);
  EXPECT_EQ(t.Size(), 1u);
}

TEST(KvTableTest, KeysAndValuesMayHoldNulBytes) {
  KvTable t;
  const std::string key("a\0b", 3);
  const std::string value("\0\x01\xff\0", 4);
  t.Set(key, value);
  EXPECT_EQ(t.Get(key), value);
  EXPECT_EQ(t.Get("a"), std::nullopt);  // not truncated at the NUL
  auto listed = t.List(std::string("a\0", 2));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed.begin()->first, key);
  EXPECT_EQ(listed.begin()->second.size(), 4u);
}

TEST(KvTableTest, AddCountsFromZeroAndRejectsNonIntegers) {
  KvTable t;
  EXPECT_EQ(t.Add("n", 1), 1);
  EXPECT_EQ(t.Add("n", 41), 42);
  EXPECT_EQ(t.Add("n", -50), -8);
  EXPECT_EQ(t.Get("n"), "-8");
  EXPECT_EQ(t.Add("m", 0), 0);
  EXPECT_EQ(t.Get("m"), "0");
  t.Set("s", "12");
  EXPECT_EQ(t.Add("s", 1), 13);

  t.Set("word", "abc");
  auto msg = ThrownMessage<InvalidArgument>([&] { t.Add("word", 1); });
  EXPECT_THAT(msg, HasSubstr("'word'"));
  EXPECT_THAT(msg, HasSubstr("not a decimal integer"));
  EXPECT_EQ(t.Get("word"), "abc");  // unchanged
  for (const char* bad : {"", "1.5", "12a", " 3", "-", "99999999999999999999"}) {
    t.Set("bad", bad);
    ThrownMessage<InvalidArgument>([&] { t.Add("bad", 1); });
  }
  t.Set("big", std::to_string(INT64_MAX));
  EXPECT_THAT(ThrownMessage<InvalidArgument>([&] { t.Add("big", 1); }), HasSubstr("overflows"));
}

TEST(KvTableTest, CompareSetAbsentExpectedAndMismatch) {
  KvTable t;
  // Absent key: an empty expected matches, anything else does not.
  EXPECT_EQ(t.CompareSet("k", "x", "y"), "");
  EXPECT_EQ(t.Get("k"), std::nullopt);
  EXPECT_EQ(t.CompareSet("k", "", "first"), "first");
  EXPECT_EQ(t.Get("k"), "first");
  // Present key: only the exact current value matches.
  EXPECT_EQ(t.CompareSet("k", "", "second"), "first");
  EXPECT_EQ(t.CompareSet("k", "wrong", "second"), "first");
  EXPECT_EQ(t.Get("k"), "first");
  EXPECT_EQ(t.CompareSet("k", "first", "second"), "second");
  EXPECT_EQ(t.Get("k"), "second");
}

TEST(KvTableTest, ListByPrefix) {
  KvTable t;
  for (const char* k : {"a/1", "a/2", "a", "ab", "b/1"}) t.Set(k, std::string("v") + k);
  auto a = t.List("a/");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a.at("a/1"), "va/1");
  EXPECT_EQ(a.at("a/2"), "va/2");
  EXPECT_EQ(t.List("a").size(), 4u);
  EXPECT_EQ(t.List("").size(), 5u);
  EXPECT_TRUE(t.List("c").empty());
}

TEST(KvTableTest, WatchOnExistingKeysFiresInsideTheCall) {
  KvTable t;
  t.Set("x", "1");
  t.Set("y", "2");
  bool fired = false;
  t.Watch({"y", "x"}, KvTable::DeadlineAfter(milliseconds(0)), [&](KvTable::WatchResult r) {
    fired = true;
    EXPECT_EQ(r.status, Status::kReady);
    EXPECT_THAT(r.values, ElementsAre("2", "1"));
  });
  EXPECT_TRUE(fired);
  EXPECT_EQ(t.NumWatches(), 0u);
}

TEST(KvTableTest, WatchFiresWhenTheLastKeyIsSetByAnotherThread) {
  KvTable t;
  Recorder rec;
  t.Watch({"a", "b", "a", "c"}, KvTable::DeadlineAfter(milliseconds(5000)), rec.Callback());
  EXPECT_EQ(t.NumWatches(), 1u);
  std::thread setter([&] {
    t.Set("a", "A");
    t.Add("b", 7);
    std::this_thread::sleep_for(milliseconds(50));
    EXPECT_EQ(rec.calls.load(), 0);  // "c" is still missing
    t.CompareSet("c", "", "C");
  });
  auto r = rec.Wait();
  setter.join();
  EXPECT_EQ(r.status, Status::kReady);
  EXPECT_THAT(r.values, ElementsAre("A", "7", "A", "C"));
  EXPECT_EQ(rec.calls.load(), 1);
  EXPECT_EQ(t.NumWatches(), 0u);
}

TEST(KvTableTest, WatchNeedsAllKeysAtOnce) {
  KvTable t;
  Recorder rec;
  t.Watch({"a", "b"}, KvTable::DeadlineAfter(milliseconds(5000)), rec.Callback());
  t.Set("a", "1");
  t.Delete("a");
  t.Set("b", "2");
  EXPECT_EQ(rec.calls.load(), 0);  // "a" no longer exists
  t.Set("a", "3");
  auto r = rec.Wait();
  EXPECT_EQ(r.status, Status::kReady);
  EXPECT_THAT(r.values, ElementsAre("3", "2"));
}

TEST(KvTableTest, TimeoutNamesOnlyTheMissingKeys) {
  KvTable t;
  t.Set("here", "1");
  Recorder rec;
  const auto start = Clock::now();
  t.Watch({"here", "gone1", "gone2"}, KvTable::DeadlineAfter(milliseconds(100)), rec.Callback());
  auto r = rec.Wait();
  EXPECT_GE(MillisSince(start), 95);
  EXPECT_LT(MillisSince(start), 2000);
  EXPECT_EQ(r.status, Status::kTimeout);
  EXPECT_THAT(r.missing, ElementsAre("gone1", "gone2"));
  EXPECT_EQ(t.NumWatches(), 0u);
}

TEST(KvTableTest, ZeroTimeoutOnAMissingKeyTimesOutInsideTheCall) {
  KvTable t;
  bool fired = false;
  t.Watch({"k"}, KvTable::DeadlineAfter(milliseconds(0)), [&](KvTable::WatchResult r) {
    fired = true;
    EXPECT_EQ(r.status, Status::kTimeout);
    EXPECT_THAT(r.missing, ElementsAre("k"));
  });
  EXPECT_TRUE(fired);
}

TEST(KvTableTest, EarlierDeadlinesFireFirst) {
  KvTable t;
  Recorder late, early;
  const auto start = Clock::now();
  t.Watch({"k"}, KvTable::DeadlineAfter(milliseconds(3000)), late.Callback());
  t.Watch({"k"}, KvTable::DeadlineAfter(milliseconds(50)), early.Callback());
  EXPECT_EQ(early.Wait().status, Status::kTimeout);
  EXPECT_LT(MillisSince(start), 1000);  // the timer woke for the new, earlier deadline
  EXPECT_EQ(late.calls.load(), 0);
  t.Set("k", "v");
  EXPECT_EQ(late.Wait().status, Status::kReady);
}

TEST(KvTableTest, CancelFiresOnceWithCancelled) {
  KvTable t;
  Recorder rec;
  auto id = t.Watch({"k"}, KvTable::DeadlineAfter(milliseconds(5000)), rec.Callback());
  EXPECT_TRUE(t.Cancel(id));
  EXPECT_EQ(rec.calls.load(), 1);  // inside Cancel
  auto r = rec.Wait();
  EXPECT_EQ(r.status, Status::kCancelled);
  EXPECT_THAT(r.missing, ElementsAre("k"));
  EXPECT_FALSE(t.Cancel(id));
  t.Set("k", "v");
  EXPECT_EQ(rec.calls.load(), 1);
  EXPECT_EQ(t.NumWatches(), 0u);
  EXPECT_FALSE(t.Cancel(12345));
}

TEST(KvTableTest, DestructorCancelsPendingWatches) {
  Recorder rec;
  {
    KvTable t;
    t.Watch({"k"}, KvTable::Clock::time_point::max(), rec.Callback());
  }
  EXPECT_EQ(rec.Wait().status, Status::kCancelled);
}

TEST(KvTableTest, ThousandWatchesReleasedByOneSet) {
  KvTable t;
  std::atomic<int> ready{0}, other{0};
  for (int i = 0; i < 1000; ++i) {
    t.Watch({"go"}, KvTable::DeadlineAfter(milliseconds(10000)), [&](KvTable::WatchResult r) {
      (r.status == Status::kReady && r.values.front() == "now" ? ready : other)++;
    });
  }
  EXPECT_EQ(t.NumWatches(), 1000u);
  t.Set("go", "now");
  EXPECT_EQ(ready.load(), 1000);  // all delivered by the Set itself
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(t.NumWatches(), 0u);
}

TEST(KvTableTest, EveryWatchFiresExactlyOnceUnderRacingSetCancelAndTimeout) {
  KvTable t;
  constexpr int kWatches = 3000;
  std::vector<std::atomic<int>> calls(kWatches);
  std::vector<KvTable::WatchId> ids(kWatches);
  for (int i = 0; i < kWatches; ++i) {
    // A third time out during the race, the rest race a Set against a Cancel.
    const auto timeout = milliseconds(i % 3 == 0 ? 5 : 10000);
    ids[i] = t.Watch({"k" + std::to_string(i % 50)}, KvTable::DeadlineAfter(timeout),
                     [&calls, i](KvTable::WatchResult) { calls[i]++; });
  }
  std::thread setter([&] {
    for (int k = 0; k < 50; ++k) t.Set("k" + std::to_string(k), "v");
  });
  std::thread canceller([&] {
    for (int i = kWatches - 1; i >= 0; --i) t.Cancel(ids[i]);
  });
  setter.join();
  canceller.join();
  for (int i = 0; i < kWatches; ++i) ASSERT_EQ(calls[i].load(), 1) << "watch " << i;
  EXPECT_EQ(t.NumWatches(), 0u);
}

TEST(KvTableTest, CallbacksMayCallTheTable) {
  KvTable t;
  Recorder rec;
  t.Watch({"a"}, KvTable::DeadlineAfter(milliseconds(5000)), [&](KvTable::WatchResult) {
    t.Set("b", *t.Get("a") + "!");  // would deadlock if called under the table's lock
  });
  t.Watch({"b"}, KvTable::DeadlineAfter(milliseconds(5000)), rec.Callback());
  t.Set("a", "hi");
  EXPECT_THAT(rec.Wait().values, ElementsAre("hi!"));
}

}  // namespace
}  // namespace cohort::collectives
