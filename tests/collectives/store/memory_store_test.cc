#include "collectives/store/memory_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "collectives/store/prefix_store.h"
#include "common/error.h"
#include "tests/collectives/store/store_test_util.h"

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using testing::Clock;
using ::testing::HasSubstr;
using testing::MillisSince;
using ::testing::Not;
using testing::ThrownMessage;

TEST(MemoryStoreTest, EveryOperation) {
  MemoryStore s;
  s.Set("k", std::string("v\0w", 3));
  EXPECT_EQ(s.Get("k", milliseconds(0)), std::string("v\0w", 3));
  EXPECT_EQ(s.Add("n", 5), 5);
  EXPECT_EQ(s.Add("n", -2), 3);
  EXPECT_THAT(ThrownMessage<InvalidArgument>([&] { s.Add("k", 1); }), HasSubstr("'k'"));
  EXPECT_EQ(s.CompareSet("c", "", "1"), "1");
  EXPECT_EQ(s.CompareSet("c", "0", "2"), "1");
  EXPECT_EQ(s.CompareSet("c", "1", "2"), "2");
  auto all = s.List("");
  EXPECT_EQ(all.size(), 3u);
  EXPECT_EQ(all.at("n"), "3");
  EXPECT_TRUE(s.Delete("c"));
  EXPECT_FALSE(s.Delete("c"));
  s.Wait({"k", "n"}, milliseconds(0));  // both exist: returns at once
  EXPECT_EQ(s.table()->Size(), 2u);
}

TEST(MemoryStoreTest, GetTimeoutNamesTheKeyAndTheWait) {
  MemoryStore s;
  const auto start = Clock::now();
  auto msg = ThrownMessage<Timeout>([&] { s.Get("rank3/addr", milliseconds(150)); });
  EXPECT_GE(MillisSince(start), 145);
  EXPECT_LT(MillisSince(start), 2000);
  EXPECT_THAT(msg, HasSubstr("'rank3/addr'"));
  EXPECT_THAT(msg, HasSubstr("150 ms"));
  // Zero does not wait.
  const auto start0 = Clock::now();
  ThrownMessage<Timeout>([&] { s.Get("absent", milliseconds(0)); });
  EXPECT_LT(MillisSince(start0), 100);
}

TEST(MemoryStoreTest, WaitForKeysSetLaterByOtherThreads) {
  MemoryStore s;
  std::vector<std::thread> ranks;
  const auto start = Clock::now();
  for (int r = 0; r < 4; ++r) {
    ranks.emplace_back([&s, r] {
      std::this_thread::sleep_for(milliseconds(30 * (r + 1)));
      s.Set("rank/" + std::to_string(r), std::to_string(r * 10));
    });
  }
  s.Wait({"rank/0", "rank/1", "rank/2", "rank/3"}, milliseconds(5000));
  EXPECT_GE(MillisSince(start), 115);
  for (auto& t : ranks) t.join();
  EXPECT_EQ(s.Get("rank/3", milliseconds(0)), "30");
}

TEST(MemoryStoreTest, WaitTimeoutNamesOnlyTheMissingKeys) {
  MemoryStore s;
  s.Set("rank/0", "x");
  s.Set("rank/2", "x");
  auto msg = ThrownMessage<Timeout>([&] {
    s.Wait({"rank/0", "rank/1", "rank/2", "rank/3"}, milliseconds(100));
  });
  EXPECT_THAT(msg, HasSubstr("2 of 4 keys still missing: 'rank/1', 'rank/3'"));
  EXPECT_THAT(msg, HasSubstr("100 ms"));
  EXPECT_THAT(msg, Not(HasSubstr("'rank/0'")));
}

TEST(MemoryStoreTest, ThousandBlockedGetsReleasedByOneSet) {
  MemoryStore s;
  constexpr int kWaiters = 1000;
  std::atomic<int> ok{0};
  std::vector<std::thread> waiters;
  waiters.reserve(kWaiters);
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      if (s.Get("go", milliseconds(20000)) == "now") ok++;
    });
  }
  // Let the waiters register, then release them all at once.
  for (int i = 0; i < 500 && s.table()->NumWatches() < kWaiters; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(s.table()->NumWatches(), static_cast<size_t>(kWaiters));
  const auto start = Clock::now();
  s.Set("go", "now");
  for (auto& t : waiters) t.join();
  EXPECT_EQ(ok.load(), kWaiters);
  EXPECT_LT(MillisSince(start), 5000);
  EXPECT_EQ(s.table()->NumWatches(), 0u);
}

TEST(MemoryStoreTest, StoresSharingATableSeeEachOther) {
  auto table = std::make_shared<KvTable>();
  MemoryStore a(table), b(table);
  a.Set("k", "v");
  EXPECT_EQ(b.Get("k", milliseconds(0)), "v");
  EXPECT_THROW(MemoryStore(nullptr), InvalidArgument);
}

TEST(PrefixStoreTest, ScopesEveryOperation) {
  auto inner = std::make_shared<MemoryStore>();
  PrefixStore run(inner, "run7");
  run.Set("k", "v");
  EXPECT_EQ(inner->Get("run7/k", milliseconds(0)), "v");
  EXPECT_EQ(run.Get("k", milliseconds(0)), "v");
  EXPECT_EQ(run.Add("n", 2), 2);
  EXPECT_EQ(inner->Get("run7/n", milliseconds(0)), "2");
  EXPECT_EQ(run.CompareSet("c", "", "1"), "1");
  EXPECT_EQ(inner->Get("run7/c", milliseconds(0)), "1");
  EXPECT_TRUE(run.Delete("c"));
  EXPECT_FALSE(inner->Delete("run7/c"));
  inner->Set("k", "outside");  // not visible through the prefix
  EXPECT_EQ(run.Get("k", milliseconds(0)), "v");
  run.Wait({"k", "n"}, milliseconds(0));

  auto listed = run.List("");
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed.at("k"), "v");  // the prefix is stripped back off
  EXPECT_EQ(listed.at("n"), "2");
  EXPECT_EQ(run.List("k").size(), 1u);
  EXPECT_EQ(run.prefix(), "run7/");
}

TEST(PrefixStoreTest, NestedPrefixesAndIsolation) {
  auto inner = std::make_shared<MemoryStore>();
  auto run = std::make_shared<PrefixStore>(inner, "run");
  PrefixStore restart0(run, "0"), restart1(run, "1");
  restart0.Set("addr", "a0");
  restart1.Set("addr", "a1");
  EXPECT_EQ(inner->Get("run/0/addr", milliseconds(0)), "a0");
  EXPECT_EQ(restart1.Get("addr", milliseconds(0)), "a1");
  EXPECT_EQ(restart0.List("").size(), 1u);
  EXPECT_EQ(run->List("").size(), 2u);
  auto msg = ThrownMessage<Timeout>([&] { restart1.Wait({"addr", "port"}, milliseconds(20)); });
  EXPECT_THAT(msg, HasSubstr("'run/1/port'"));  // names the full key, so it can be looked up
  EXPECT_THROW(PrefixStore(nullptr, "x"), InvalidArgument);
}

}  // namespace
}  // namespace cohort::collectives
