// FaultyObjectStore: each fault fires exactly where asked, and replays with the same seed.
#include "checkpoint/store/faulty_store.h"

#include <gtest/gtest.h>

#include <chrono>

#include "checkpoint/store/memory_store.h"
#include "tests/checkpoint/store/store_test_util.h"

namespace cohort::checkpoint::testing {
namespace {

using Op = FaultyObjectStore::Op;
using Cut = FaultyObjectStore::Cut;

std::shared_ptr<ObjectStore> FreshMemory(const std::string& name) {
  ClearMemoryStore(name);
  return std::make_shared<MemoryObjectStore>(name);
}

TEST(FaultyStore, FailsTheNthCallOfAnOp) {
  FaultyObjectStore store(FreshMemory("faulty-nth"));
  store.Put("a", std::string("1"));
  store.FailNth(Op::kGet, 2, ErrorKind::kDataLoss);
  EXPECT_EQ(store.Get("a").value(), "1");
  try {
    store.Get("a");
    FAIL() << "second Get passed";
  } catch (const DataLoss& e) {
    EXPECT_NE(std::string(e.what()).find("injected fault: Get of 'a'"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(store.Get("a").value(), "1");  // only the nth
  EXPECT_EQ(store.Calls(Op::kGet), 3);
  EXPECT_EQ(store.Injected(), 1);

  store.FailNth(Op::kCommit, 1);
  EXPECT_THROW(store.Put("b", std::string("2")), Unavailable);
  EXPECT_FALSE(store.inner().Get("b").has_value());  // a failed commit leaves nothing
  store.Put("b", std::string("2"));
  EXPECT_EQ(store.inner().Get("b").value(), "2");

  store.FailNth(Op::kDelete, 1, ErrorKind::kTimeout);
  EXPECT_THROW(store.Delete("a"), Timeout);
  store.FailNth(Op::kList, 1);
  EXPECT_THROW(store.List(""), Unavailable);
  store.FailNth(Op::kHead, 1);
  EXPECT_THROW(store.Head("a"), Unavailable);
  store.FailNth(Op::kGetRange, 1);
  EXPECT_THROW(store.GetRange("a", 0, 1), Unavailable);
  store.FailNth(Op::kNewWriter, 1);
  EXPECT_THROW(store.NewWriter("c"), Unavailable);
  store.FailNth(Op::kWrite, 1);
  EXPECT_THROW(store.Put("c", std::string("3")), Unavailable);
  EXPECT_EQ(store.List("").size(), 2u);
}

TEST(FaultyStore, CutWriteCommitsATruncatedObject) {
  FaultyObjectStore store(FreshMemory("faulty-cut"));
  const std::string data = Payload(1000, 3);
  store.CutWrite(2, Cut::kCommitTruncated, 337);
  store.Put("first", data);
  auto writer = store.NewWriter("second");
  for (size_t off = 0; off < data.size(); off += 100) writer->Write(data.data() + off, 100);
  writer->Commit();  // succeeds: the damage is silent, as a torn write would be
  EXPECT_EQ(store.Get("first").value(), data);
  EXPECT_EQ(store.Get("second").value(), data.substr(0, 337));
  EXPECT_EQ(store.Injected(), 1);
}

TEST(FaultyStore, CutWriteThrowsMidWrite) {
  FaultyObjectStore store(FreshMemory("faulty-throw"));
  store.CutWrite(1, Cut::kThrowMidWrite, 250);
  auto writer = store.NewWriter("obj");
  std::string chunk(100, 'x');
  writer->Write(chunk.data(), chunk.size());
  writer->Write(chunk.data(), chunk.size());
  EXPECT_THROW(writer->Write(chunk.data(), chunk.size()), Unavailable);
  EXPECT_THROW(writer->Commit(), Unavailable);
  writer.reset();
  EXPECT_FALSE(store.Get("obj").has_value());
}

TEST(FaultyStore, RandomFaultsReplayWithTheSameSeed) {
  auto run = [](uint64_t seed) {
    FaultyObjectStore store(FreshMemory("faulty-random"), seed);
    store.Put("k", std::string("v"));
    store.FailRandomly(Op::kGet, 0.3);
    store.CutWrite(1, Cut::kCommitTruncated);  // random cut point
    store.Put("cut", Payload(10000, 1));
    std::string pattern;
    for (int i = 0; i < 200; ++i) {
      try {
        store.Get("k");
        pattern += '.';
      } catch (const Unavailable&) {
        pattern += 'X';
      }
    }
    return pattern + std::to_string(store.inner().Head("cut").value().size);
  };
  std::string a = run(42), b = run(42), c = run(43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  size_t failures = std::count(a.begin(), a.end(), 'X');
  EXPECT_GT(failures, 30u);  // ~60 expected of 200
  EXPECT_LT(failures, 95u);
}

TEST(FaultyStore, DelaysCalls) {
  FaultyObjectStore store(FreshMemory("faulty-delay"), 5);
  store.Put("k", std::string("v"));
  store.Delay(Op::kHead, std::chrono::milliseconds(30), std::chrono::milliseconds(20));
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(store.Head("k").has_value());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  EXPECT_GE(ms, 90);
  EXPECT_LT(ms, 1000);
  store.Reset();
  start = std::chrono::steady_clock::now();
  store.Head("k");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(20));
}

}  // namespace
}  // namespace cohort::checkpoint::testing
