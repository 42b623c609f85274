// ShmCollectives (collectives/shm/) with ranks as threads of this process over a MemoryStore:
// values of all-reduce, broadcast, all-gather and reduce-scatter for every dtype, op and size (0,
// 1, primes, several pieces), in and out of place, calls that disagree, a rank that never
// arrives, and what is left in /dev/shm. Real processes (a rank SIGKILLed mid-collective) are in
// shm_fault_test, and through the Gloo backend in multiproc_test.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "collectives/shm/shm_collectives.h"
#include "collectives/shm/shm_copy.h"
#include "collectives/store/memory_store.h"
#include "common/error.h"
#include "tests/collectives/expected_values.h"
#include "tests/util/dev_shm.h"
#include "tests/util/scoped_env.h"

namespace cohort::testing {
namespace {

using namespace collectives;
using namespace std::chrono_literals;

// Runs body(rank, group) on size threads, each with its own ShmCollectives (created together).
// Returns each rank's exception message ("" when it returned normally).
std::vector<std::string> OnRanks(int size, const std::function<void(int, ShmCollectives&)>& body) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::string> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        std::string why;
        auto shm = ShmCollectives::Create(*store, "test", r, size, 10s, &why);
        if (!shm) throw Unavailable("no shared memory: " + why);
        body(r, *shm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

// Checks count elements of op over size ranks, for the k-th operation; returns the mismatches.
size_t Wrong(DType dtype, ReduceOp op, int size, const std::vector<char>& out, size_t count,
             int k) {
  size_t wrong = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!Close(dtype, op, Load(dtype, out.data(), i), Expected(dtype, op, size, i, k))) ++wrong;
  }
  return wrong;
}

std::vector<char> Inputs(DType dtype, int rank, size_t count, int k) {
  std::vector<char> buf(count * ElementSize(dtype) + 1);  // +1: never a null data() at count 0
  for (size_t i = 0; i < count; ++i)
    StoreExact(dtype, buf.data(), i, InputValue(dtype, rank, i, k));
  return buf;
}

int CountSegmentsOfThisProcess() { return CountDevShmEntries(fmt::format("cohort-{}-", getpid())); }

class ShmWorld : public ::testing::TestWithParam<int> {};

TEST_P(ShmWorld, EveryDtypeOpAndSizeIsExactOnEveryRank) {
  const int size = GetParam();
  auto errors = OnRanks(size, [&](int rank, ShmCollectives& shm) {
    int k = 0;
    for (DType dtype : kAllDTypes) {
      for (ReduceOp op : kAllReduceOps) {
        for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1031}}) {
          ++k;
          auto buf = Inputs(dtype, rank, count, k);
          shm.AllReduce(buf.data(), buf.data(), count, dtype, op, 10s);
          const size_t wrong = Wrong(dtype, op, size, buf, count, k);
          if (wrong) {
            throw Internal(fmt::format("{} {} count {}: {} wrong", DTypeName(dtype),
                                       ReduceOpName(op), count, wrong));
          }
        }
      }
      // A prime count over several pieces (a piece is slot_bytes), out of place.
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
        ++k;
        const size_t count = 3 * shm.slot_bytes() / ElementSize(dtype) + 1031;
        auto in = Inputs(dtype, rank, count, k);
        std::vector<char> out(in.size());
        shm.AllReduce(in.data(), out.data(), count, dtype, op, 10s);
        if (const size_t wrong = Wrong(dtype, op, size, out, count, k)) {
          throw Internal(fmt::format("{} {} count {}: {} wrong", DTypeName(dtype), ReduceOpName(op),
                                     count, wrong));
        }
      }
    }
  });
  for (int r = 0; r < size; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

// Counts for the other collectives: none, one, primes, and more than one piece of every op
// (reduce-scatter's pieces are slot_bytes / size per rank).
std::vector<size_t> OtherCounts(const ShmCollectives& shm, DType dtype) {
  return {0, 1, 7, 1031, 100003, 3 * shm.slot_bytes() / ElementSize(dtype) + 1031};
}

TEST_P(ShmWorld, BroadcastIsExactForEveryDtypeAndSize) {
  const int size = GetParam();
  auto errors = OnRanks(size, [&](int rank, ShmCollectives& shm) {
    int k = 0;
    for (DType dtype : kAllDTypes) {
      for (size_t count : OtherCounts(shm, dtype)) {
        const int root = ++k % size;
        auto buf = Inputs(dtype, rank == root ? root : size + 7, count, k);
        shm.Broadcast(buf.data(), count, dtype, root, 10s);
        size_t wrong = 0;
        for (size_t i = 0; i < count; ++i)
          wrong += Load(dtype, buf.data(), i) != InputValue(dtype, root, i, k);
        if (wrong) {
          throw Internal(fmt::format("broadcast {}[{}] from {}: {} wrong", DTypeName(dtype), count,
                                     root, wrong));
        }
      }
    }
  });
  for (int r = 0; r < size; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST_P(ShmWorld, AllGatherIsExactForEveryDtypeAndSizeInAndOutOfPlace) {
  const int size = GetParam();
  auto errors = OnRanks(size, [&](int rank, ShmCollectives& shm) {
    int k = 0;
    for (DType dtype : kAllDTypes) {
      const size_t es = ElementSize(dtype);
      for (size_t count : OtherCounts(shm, dtype)) {
        const bool in_place = ++k % 2 == 0;
        auto in = Inputs(dtype, rank, count, k);
        std::vector<char> out(size * count * es + 1, 0x5a);
        if (in_place) std::memcpy(out.data() + rank * count * es, in.data(), count * es);
        shm.AllGather(in_place ? out.data() + rank * count * es : in.data(), out.data(), count,
                      dtype, 10s);
        size_t wrong = 0;
        for (int r = 0; r < size; ++r) {
          for (size_t i = 0; i < count; ++i)
            wrong += Load(dtype, out.data(), r * count + i) != InputValue(dtype, r, i, k);
        }
        if (wrong) {
          throw Internal(fmt::format("all-gather {}[{}] {}: {} wrong", DTypeName(dtype), count,
                                     in_place ? "in place" : "out of place", wrong));
        }
      }
    }
  });
  for (int r = 0; r < size; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST_P(ShmWorld, ReduceScatterIsExactForEveryDtypeOpAndSizeInAndOutOfPlace) {
  const int size = GetParam();
  auto errors = OnRanks(size, [&](int rank, ShmCollectives& shm) {
    int k = 0;
    for (DType dtype : kAllDTypes) {
      const size_t es = ElementSize(dtype);
      for (ReduceOp op : kAllReduceOps) {
        for (size_t count : OtherCounts(shm, dtype)) {
          const bool in_place = ++k % 2 == 0;
          auto in = Inputs(dtype, rank, size * count, k);
          std::vector<char> out(count * es + 1, 0x5a);
          char* res = in_place ? in.data() + rank * count * es : out.data();
          shm.ReduceScatter(in.data(), res, count, dtype, op, 10s);
          size_t wrong = 0;
          for (size_t i = 0; i < count; ++i) {
            const double want = Expected(dtype, op, size, rank * count + i, k);
            wrong += !Close(dtype, op, Load(dtype, res, i), want);
          }
          if (wrong) {
            throw Internal(fmt::format("reduce-scatter {}[{}] {} {}: {} wrong", DTypeName(dtype),
                                       count, ReduceOpName(op),
                                       in_place ? "in place" : "out of place", wrong));
          }
        }
      }
    }
  });
  for (int r = 0; r < size; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Sizes, ShmWorld, ::testing::Values(1, 2, 3, 4),
                         [](const auto& info) { return fmt::format("world{}", info.param); });

TEST(Shm, SmallAllReducesGiveEveryRankBitwiseTheSameFloats) {
  // The one-step path: every rank reduces the slots itself, in rank order.
  std::vector<std::vector<float>> results(3);
  auto errors = OnRanks(3, [&](int rank, ShmCollectives& shm) {
    std::vector<float> v(1031);
    for (size_t i = 0; i < v.size(); ++i) v[i] = 1.0f / static_cast<float>(i + rank + 3);
    shm.AllReduce(v.data(), v.data(), v.size(), DType::kFloat32, ReduceOp::kSum, 10s);
    results[rank] = v;
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[1].data(), results[0].size() * 4));
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[2].data(), results[0].size() * 4));
  // In rank order: (a + b) + c, which differs from a + (b + c) for some of these.
  const float want = (1.0f / 3 + 1.0f / 4) + 1.0f / 5;
  EXPECT_EQ(results[0][0], want);
}

TEST(Shm, ResultsLargerThanTheCacheAreWrittenExactlyWithStreamingStores) {
  size_t count = size_t{1} << 20;
  while (!StreamsResult(count * 4, 2)) count *= 2;
  count += 7;  // and an odd tail, past the 64-byte blocks
  auto errors = OnRanks(2, [&](int rank, ShmCollectives& shm) {
    std::vector<float> in(count), out(count + 1, -1.0f);
    for (size_t i = 0; i < count; ++i) in[i] = static_cast<float>(i % 1000 + rank);
    // Out of place, at an odd offset: unaligned heads and tails too.
    shm.AllReduce(in.data(), reinterpret_cast<char*>(out.data()) + 4, count, DType::kFloat32,
                  ReduceOp::kSum, 30s);
    size_t wrong = 0;
    for (size_t i = 0; i < count; ++i) wrong += out[i + 1] != 2.0f * (i % 1000) + 1;
    if (wrong || out[0] != -1.0f) throw Internal(fmt::format("{} wrong", wrong));
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(Shm, EveryRankGetsBitwiseTheSameFloats) {
  // Sums of values that do not add exactly: every rank must still hold the same bits.
  std::vector<std::vector<float>> results(3);
  auto errors = OnRanks(3, [&](int rank, ShmCollectives& shm) {
    std::vector<float> v(100003);
    for (size_t i = 0; i < v.size(); ++i) v[i] = 1.0f / static_cast<float>(i + rank + 3);
    shm.AllReduce(v.data(), v.data(), v.size(), DType::kFloat32, ReduceOp::kAvg, 10s);
    results[rank] = v;
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[1].data(), results[0].size() * 4));
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[2].data(), results[0].size() * 4));
  EXPECT_FLOAT_EQ(results[0][0], (1.0f / 3 + 1.0f / 4 + 1.0f / 5) / 3);
}

TEST(Shm, CallsThatDisagreeFailOnEveryRankNamingBoth) {
  auto errors = OnRanks(2, [](int rank, ShmCollectives& shm) {
    std::vector<float> v(9, 1.0f);
    shm.AllReduce(v.data(), v.data(), rank == 0 ? 7 : 9, DType::kFloat32, ReduceOp::kSum, 5s);
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("ranks called different all-reduces"), std::string::npos) << e;
    EXPECT_NE(e.find("f32[7] sum"), std::string::npos) << e;
    EXPECT_NE(e.find("f32[9] sum"), std::string::npos) << e;
  }
  // A zero-length call meets the others too, so it cannot silently pass a non-empty one.
  errors = OnRanks(2, [](int rank, ShmCollectives& shm) {
    std::vector<int64_t> v(5, 1);
    shm.AllReduce(v.data(), v.data(), rank == 0 ? 0 : 5, DType::kInt64, ReduceOp::kMax, 5s);
  });
  for (const auto& e : errors) EXPECT_NE(e.find("i64[0] max"), std::string::npos) << e;
}

TEST(Shm, OtherCollectivesThatDisagreeFailOnEveryRankNamingBoth) {
  auto errors = OnRanks(2, [](int rank, ShmCollectives& shm) {
    std::vector<float> v(16, 1.0f);
    shm.Broadcast(v.data(), 7, DType::kFloat32, rank, 5s);  // each names itself the root
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("ranks called different broadcasts"), std::string::npos) << e;
    EXPECT_NE(e.find("f32[7] from rank 0"), std::string::npos) << e;
    EXPECT_NE(e.find("f32[7] from rank 1"), std::string::npos) << e;
  }
  errors = OnRanks(3, [](int rank, ShmCollectives& shm) {
    std::vector<int32_t> in(3 * 9, 1), out(9);
    shm.ReduceScatter(in.data(), out.data(), rank == 2 ? 9 : 8, DType::kInt32, ReduceOp::kSum, 5s);
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("ranks called different reduce-scatters"), std::string::npos) << e;
    EXPECT_NE(e.find("i32[9] sum"), std::string::npos) << e;
  }
  // Different collectives altogether: both named, with what they are.
  errors = OnRanks(2, [](int rank, ShmCollectives& shm) {
    std::vector<float> in(5, 1.0f), out(10);
    if (rank == 0) {
      shm.AllGather(in.data(), out.data(), 5, DType::kFloat32, 5s);
    } else {
      shm.AllReduce(in.data(), out.data(), 5, DType::kFloat32, ReduceOp::kMax, 5s);
    }
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("ranks called different collectives"), std::string::npos) << e;
    EXPECT_NE(e.find("all-gather f32[5]"), std::string::npos) << e;
    EXPECT_NE(e.find("all-reduce f32[5] max"), std::string::npos) << e;
  }
}

TEST(Shm, ARootOutsideTheGroupIsRefused) {
  auto errors = OnRanks(2, [](int, ShmCollectives& shm) {
    float v = 1;
    shm.Broadcast(&v, 1, DType::kFloat32, 2, 5s);
  });
  for (const auto& e : errors) EXPECT_NE(e.find("the group has ranks 0 to 1"), std::string::npos);
}

TEST(Shm, ARankThatNeverArrivesAtAnyCollectiveIsNamedAtTheTimeout) {
  for (OpType type : {OpType::kBroadcast, OpType::kAllGather, OpType::kReduceScatter}) {
    auto errors = OnRanks(3, [&](int rank, ShmCollectives& shm) {
      if (rank == 1) return;  // never calls
      std::vector<double> in(3000, 1.0), out(3000);
      if (type == OpType::kBroadcast) shm.Broadcast(in.data(), 1000, DType::kFloat64, 0, 300ms);
      if (type == OpType::kAllGather)
        shm.AllGather(in.data(), out.data(), 1000, DType::kFloat64, 300ms);
      if (type == OpType::kReduceScatter)
        shm.ReduceScatter(in.data(), out.data(), 1000, DType::kFloat64, ReduceOp::kSum, 300ms);
    });
    for (int r : {0, 2}) {
      EXPECT_NE(errors[r].find("rank 1 did not arrive in time"), std::string::npos)
          << OpTypeName(type) << ": " << errors[r];
    }
  }
}

TEST(Shm, ARankThatNeverArrivesIsNamedAtTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  auto errors = OnRanks(3, [](int rank, ShmCollectives& shm) {
    if (rank == 2) return;  // never calls
    std::vector<double> v(1000, 1.0);
    shm.AllReduce(v.data(), v.data(), v.size(), DType::kFloat64, ReduceOp::kSum, 400ms);
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int r : {0, 1}) {
    EXPECT_NE(errors[r].find("rank 2 did not arrive in time"), std::string::npos) << errors[r];
  }
  EXPECT_EQ(errors[2], "");
  EXPECT_LT(seconds, 3.0);
}

TEST(Shm, NothingIsLeftInDevShmOnceEveryRankHasMappedIt) {
  const int before = CountSegmentsOfThisProcess();
  std::atomic<int> created{0};
  auto errors = OnRanks(3, [&](int, ShmCollectives& shm) {
    // Once every rank is past Create, the name is gone and the mapping still works.
    ++created;
    while (created.load() < 3) std::this_thread::yield();
    EXPECT_EQ(CountSegmentsOfThisProcess(), before);
    int64_t v = 2;
    shm.AllReduce(&v, &v, 1, DType::kInt64, ReduceOp::kSum, 10s);
    EXPECT_EQ(v, 6);
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(CountSegmentsOfThisProcess(), before);
}

TEST(Shm, TurnedOffEveryRankFallsBackAndSaysWhy) {
  ScopedEnv off({{"COHORT_SHM", "0"}});
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::string> why(2);
  std::vector<bool> got(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back(
        [&, r] { got[r] = ShmCollectives::Create(*store, "off", r, 2, 5s, &why[r]) != nullptr; });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(got[r]);
    EXPECT_EQ(why[r], "rank 0: COHORT_SHM=0");
  }
}

}  // namespace
}  // namespace cohort::testing
