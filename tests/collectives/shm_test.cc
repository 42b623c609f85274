// ShmAllReduce (collectives/shm/) with ranks as threads of this process over a MemoryStore:
// values for every dtype, op and size (0, 1, primes, several pieces), calls that disagree, a
// rank that never arrives, and what is left in /dev/shm. Real processes (a rank SIGKILLed
// mid-collective, a rank with COHORT_SHM=0) are in multiproc_test, through the Gloo backend.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "collectives/shm/shm_allreduce.h"
#include "collectives/store/memory_store.h"
#include "common/error.h"
#include "tests/collectives/expected_values.h"
#include "tests/util/dev_shm.h"
#include "tests/util/scoped_env.h"

namespace cohort::testing {
namespace {

using namespace collectives;
using namespace std::chrono_literals;

// Runs body(rank, group) on size threads, each with its own ShmAllReduce (created together).
// Returns each rank's exception message ("" when it returned normally).
std::vector<std::string> OnRanks(int size, const std::function<void(int, ShmAllReduce&)>& body) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::string> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        std::string why;
        auto shm = ShmAllReduce::Create(*store, "test", r, size, 10s, &why);
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
  auto errors = OnRanks(size, [&](int rank, ShmAllReduce& shm) {
    int k = 0;
    for (DType dtype : kAllDTypes) {
      for (ReduceOp op : kAllReduceOps) {
        for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1031}}) {
          ++k;
          auto buf = Inputs(dtype, rank, count, k);
          shm.Run(buf.data(), buf.data(), count, dtype, op, 10s);
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
        shm.Run(in.data(), out.data(), count, dtype, op, 10s);
        if (const size_t wrong = Wrong(dtype, op, size, out, count, k)) {
          throw Internal(fmt::format("{} {} count {}: {} wrong", DTypeName(dtype), ReduceOpName(op),
                                     count, wrong));
        }
      }
    }
  });
  for (int r = 0; r < size; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Sizes, ShmWorld, ::testing::Values(1, 2, 3, 4),
                         [](const auto& info) { return fmt::format("world{}", info.param); });

TEST(Shm, EveryRankGetsBitwiseTheSameFloats) {
  // Sums of values that do not add exactly: every rank must still hold the same bits.
  std::vector<std::vector<float>> results(3);
  auto errors = OnRanks(3, [&](int rank, ShmAllReduce& shm) {
    std::vector<float> v(100003);
    for (size_t i = 0; i < v.size(); ++i) v[i] = 1.0f / static_cast<float>(i + rank + 3);
    shm.Run(v.data(), v.data(), v.size(), DType::kFloat32, ReduceOp::kAvg, 10s);
    results[rank] = v;
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[1].data(), results[0].size() * 4));
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[2].data(), results[0].size() * 4));
  EXPECT_FLOAT_EQ(results[0][0], (1.0f / 3 + 1.0f / 4 + 1.0f / 5) / 3);
}

TEST(Shm, CallsThatDisagreeFailOnEveryRankNamingBoth) {
  auto errors = OnRanks(2, [](int rank, ShmAllReduce& shm) {
    std::vector<float> v(9, 1.0f);
    shm.Run(v.data(), v.data(), rank == 0 ? 7 : 9, DType::kFloat32, ReduceOp::kSum, 5s);
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("ranks called different all-reduces"), std::string::npos) << e;
    EXPECT_NE(e.find("f32[7] sum"), std::string::npos) << e;
    EXPECT_NE(e.find("f32[9] sum"), std::string::npos) << e;
  }
  // A zero-length call meets the others too, so it cannot silently pass a non-empty one.
  errors = OnRanks(2, [](int rank, ShmAllReduce& shm) {
    std::vector<int64_t> v(5, 1);
    shm.Run(v.data(), v.data(), rank == 0 ? 0 : 5, DType::kInt64, ReduceOp::kMax, 5s);
  });
  for (const auto& e : errors) EXPECT_NE(e.find("i64[0] max"), std::string::npos) << e;
}

TEST(Shm, ARankThatNeverArrivesIsNamedAtTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  auto errors = OnRanks(3, [](int rank, ShmAllReduce& shm) {
    if (rank == 2) return;  // never calls
    std::vector<double> v(1000, 1.0);
    shm.Run(v.data(), v.data(), v.size(), DType::kFloat64, ReduceOp::kSum, 400ms);
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
  auto errors = OnRanks(3, [&](int, ShmAllReduce& shm) {
    // Once every rank is past Create, the name is gone and the mapping still works.
    ++created;
    while (created.load() < 3) std::this_thread::yield();
    EXPECT_EQ(CountSegmentsOfThisProcess(), before);
    int64_t v = 2;
    shm.Run(&v, &v, 1, DType::kInt64, ReduceOp::kSum, 10s);
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
        [&, r] { got[r] = ShmAllReduce::Create(*store, "off", r, 2, 5s, &why[r]) != nullptr; });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(got[r]);
    EXPECT_EQ(why[r], "rank 0: COHORT_SHM=0");
  }
}

}  // namespace
}  // namespace cohort::testing
