// In-process tests of the collectives layer: kernels, argument checks, the health monitor, the
// registry, and Gloo with ranks as threads over a MemoryStore (Gloo's own BaseTest style). Work
// and Wait()'s timeouts: work_test.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "collectives/call_check.h"
#include "collectives/communicator.h"
#include "collectives/config.h"
#include "collectives/health.h"
#include "collectives/reduce.h"
#include "collectives/registry.h"
#include "collectives/store/memory_store.h"
#include "common/half.h"
#include "tests/collectives/expected_values.h"

namespace cohort::testing {
namespace {

using namespace collectives;
using namespace std::chrono_literals;

// ---- 16-bit floats ----

TEST(Half, EveryBinary16RoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    const double want = Load(DType::kFloat16, &h, 0);  // the test's own decoder
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), want) << "half bits " << h;
    ASSERT_EQ(FloatToHalf(f), h) << "half bits " << h;
  }
}

TEST(Half, FloatToHalfRoundsToNearestEven) {
  // Between 1 and the next half (1 + 2^-10): the midpoint rounds to even (1), above it up.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);               // largest finite
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);               // rounds to infinity
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -26)), 0x0000);  // below half of it: zero
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(NAN) & 0x7e00, 0x7e00);
}

TEST(Half, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie to even
  EXPECT_EQ(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie to even
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(BFloat16ToFloat(0x4049), 3.140625f);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(NAN))));
}

// ---- reduction kernels ----

TEST(Reduce, EveryOpAndDtypeMatchesTheReference) {
  for (DType dtype : kAllDTypes) {
    for (ReduceOp op : kAllReduceOps) {
      const size_t n = 1031;  // prime, not a multiple of any vector width
      const size_t es = ElementSize(dtype);
      std::vector<char> a(n * es), b(n * es), out(n * es);
      for (size_t i = 0; i < n; ++i) {
        StoreExact(dtype, a.data(), i, InputValue(dtype, 0, i, 1));
        StoreExact(dtype, b.data(), i, InputValue(dtype, 1, i, 1));
      }
      ReduceInto(op, dtype, out.data(), a.data(), b.data(), n);
      if (op == ReduceOp::kAvg) FinishAverage(dtype, out.data(), n, 2);
      for (size_t i = 0; i < n; ++i) {
        const double want = Expected(dtype, op, 2, i, 1);
        ASSERT_TRUE(Close(dtype, op, Load(dtype, out.data(), i), want))
            << DTypeName(dtype) << " " << ReduceOpName(op) << " at " << i << ": got "
            << Load(dtype, out.data(), i) << " want " << want;
      }
    }
  }
}

TEST(Reduce, HalfSumsAreRoundedNotTruncated) {
  // Fractions survive: the arithmetic happens in float, never on the raw 16-bit integers.
  uint16_t a = FloatToHalf(1.5f), b = FloatToHalf(0.25f), out = 0;
  ReduceInto(ReduceOp::kSum, DType::kFloat16, &out, &a, &b, 1);
  EXPECT_EQ(HalfToFloat(out), 1.75f);
  uint16_t x = FloatToBFloat16(0.1f), y = FloatToBFloat16(0.2f), z = 0;
  ReduceInto(ReduceOp::kSum, DType::kBFloat16, &z, &x, &y, 1);
  EXPECT_NEAR(BFloat16ToFloat(z), 0.3f, 0.002f);
  uint16_t h = FloatToHalf(7.0f);
  FinishAverage(DType::kFloat16, &h, 1, 2);
  EXPECT_EQ(HalfToFloat(h), 3.5f);
  int32_t i = -7;
  FinishAverage(DType::kInt32, &i, 1, 2);
  EXPECT_EQ(i, -3);  // toward zero, as C++ and NCCL do
}

// ---- ranks as threads over one MemoryStore ----

#if COHORT_HAVE_GLOO
// Runs fn(rank, comm) on `size` threads, each with its own Gloo communicator.
void RunRanks(int size, const std::function<void(int, Communicator&)>& fn,
              std::function<void(CommConfig&)> tweak = nullptr) {
  auto store = std::make_shared<MemoryStore>();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(size);
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        CommConfig c;
        c.rank = r;
        c.size = size;
        c.store = store;
        c.timeout = 10s;
        c.heartbeat = 100ms;
        if (tweak) tweak(c);
        auto comm = CreateCommunicator("gloo", c);
        fn(r, *comm);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

class ThreadRanks : public ::testing::TestWithParam<std::tuple<int, size_t>> {};

TEST_P(ThreadRanks, AllReduceEveryDtypeAndOp) {
  const auto [size, n] = GetParam();
  RunRanks(size, [n = n](int r, Communicator& comm) {
    int k = 0;
    for (DType dtype : kAllDTypes) {
      for (ReduceOp op : kAllReduceOps) {
        ++k;
        std::vector<char> buf(n * ElementSize(dtype) + 1);
        for (size_t i = 0; i < n; ++i) StoreExact(dtype, buf.data(), i, InputValue(dtype, r, i, k));
        comm.AllReduce(TensorView(buf.data(), n, dtype), op)->Wait();
        for (size_t i = 0; i < n; ++i) {
          const double want = Expected(dtype, op, comm.Size(), i, k);
          ASSERT_TRUE(Close(dtype, op, Load(dtype, buf.data(), i), want))
              << DTypeName(dtype) << " " << ReduceOpName(op) << " i=" << i;
        }
      }
    }
  });
}

TEST_P(ThreadRanks, ReduceScatterAndAllGatherInvertEachOther) {
  const auto [size, n] = GetParam();
  RunRanks(size, [n = n](int r, Communicator& comm) {
    const int s = comm.Size();
    std::vector<float> full(n * s), part(n), back(n * s);
    for (size_t i = 0; i < full.size(); ++i) full[i] = static_cast<float>(i % 13) + r;
    comm.ReduceScatter(TensorView(full.data(), full.size(), DType::kFloat32),
                       TensorView(part.data(), n, DType::kFloat32), ReduceOp::kSum)
        ->Wait();
    comm.AllGather(TensorView(part.data(), n, DType::kFloat32),
                   TensorView(back.data(), back.size(), DType::kFloat32))
        ->Wait();
    for (size_t i = 0; i < back.size(); ++i) {
      ASSERT_EQ(back[i], s * static_cast<float>(i % 13) + s * (s - 1) / 2.0f) << i;
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Sizes, ThreadRanks,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4),
                                            ::testing::Values(size_t{0}, size_t{1}, size_t{7},
                                                              size_t{1031}, size_t{300007})),
                         [](const auto& info) {
                           return "world" + std::to_string(std::get<0>(info.param)) + "_n" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(Validation, BadArgumentsGetOneLineFixes) {
  RunRanks(1, [](int, Communicator& comm) {
    std::vector<float> a(8), b(7);
    auto expect_invalid = [](const std::function<void()>& f, const std::string& needle) {
      try {
        f();
        FAIL() << "no error; expected one mentioning " << needle;
      } catch (const InvalidArgument& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(needle), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      }
    };
    expect_invalid(
        [&] {
          comm.AllReduce(TensorView(a.data(), 8, DType::kFloat32),
                         TensorView(b.data(), 7, DType::kFloat32), ReduceOp::kSum);
        },
        "same dtype and element count");
    expect_invalid([&] { comm.Broadcast(TensorView(a.data(), 8, DType::kFloat32), 3); },
                   "root rank 3 is outside the world of 1");
    expect_invalid(
        [&] {
          comm.AllGather(TensorView(a.data(), 8, DType::kFloat32),
                         TensorView(b.data(), 7, DType::kFloat32));
        },
        "must hold in");
    expect_invalid(
        [&] {
          comm.AllReduce(TensorView(a.data(), 8, DType::kFloat32, Device{DeviceType::kCUDA, 0}),
                         ReduceOp::kSum);
        },
        "the nccl backend");
    expect_invalid([&] { comm.AllReduce(TensorView(nullptr, 8, DType::kFloat32), ReduceOp::kSum); },
                   "null data pointer");
    expect_invalid([&] { comm.Send(TensorView(a.data(), 8, DType::kFloat32), 0); },
                   "send: a rank cannot send to itself");
    const TensorView va(a.data(), 8, DType::kFloat32);
    expect_invalid(
        [&] {
          comm.BatchSendRecv({{OpType::kRecv, va, 0, 0}});
        },
        "batch op 0: recv: a rank cannot receive from itself");
    expect_invalid(
        [&] {
          comm.BatchSendRecv({{OpType::kBarrier, va, 0, 0}});
        },
        "batch op 0: barrier is not point-to-point");
    expect_invalid(
        [&] {
          comm.BatchSendRecv({{OpType::kSend, TensorView(), 2, 0}});
        },
        "batch op 0: send: destination rank 2 is outside the world of 1");
    EXPECT_TRUE(comm.BatchSendRecv({}).empty());
    EXPECT_THROW(ParseDType("float8"), InvalidArgument);
    EXPECT_THROW(ParseReduceOp("xor"), InvalidArgument);
  });
}

TEST(Validation, ConfigErrors) {
  CommConfig c;
  c.rank = 4;
  c.size = 4;
  c.store = std::make_shared<MemoryStore>();
  EXPECT_THROW(CreateCommunicator("gloo", c), InvalidArgument);
  c.rank = 0;
  EXPECT_THROW(CreateCommunicator("carrier-pigeon", c), InvalidArgument);
  c.store = nullptr;
  try {
    CreateCommunicator("gloo", c);
    FAIL();
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("COHORT_STORE"), std::string::npos) << e.what();
  }
}

// The comparison every backend's COHORT_DEBUG_COLLECTIVES runs (threaded and NCCL alike).
TEST(CallCheck, SameCallsPassAndADifferentCountDtypeOrOpIsNamed) {
  Op a;
  a.type = OpType::kAllReduce;
  a.seq = 4;
  a.reduce = ReduceOp::kSum;
  a.in = a.out = TensorView(nullptr, 7, DType::kFloat32);
  Op b = a;
  b.in = b.out = TensorView(nullptr, 9, DType::kFloat32);
  std::vector<CallSignature> same = {SignatureOf(a), SignatureOf(a), SignatureOf(a)};
  for (int r = 0; r < 3; ++r) EXPECT_NO_THROW(CheckSameCall(same.data(), 3, r));
  std::vector<CallSignature> diff = {SignatureOf(a), SignatureOf(a), SignatureOf(b)};
  try {
    CheckSameCall(diff.data(), 3, 0);
    FAIL() << "a different count passed";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("rank 0 called"), std::string::npos) << m;
    EXPECT_NE(m.find("rank 2 called"), std::string::npos) << m;
    EXPECT_NE(m.find("f32[7]"), std::string::npos) << m;
    EXPECT_NE(m.find("f32[9]"), std::string::npos) << m;
  }
  Op c = a;
  c.in = c.out = TensorView(nullptr, 7, DType::kFloat64);
  Op d = a;
  d.reduce = ReduceOp::kMax;
  for (const Op& other : {c, d}) {
    std::vector<CallSignature> v = {SignatureOf(a), SignatureOf(other)};
    EXPECT_THROW(CheckSameCall(v.data(), 2, 1), InvalidArgument);
  }
}

TEST(Registry, AutoPicksGlooWithoutMpirun) {
  if (getenv("OMPI_COMM_WORLD_SIZE")) GTEST_SKIP() << "running under mpirun";
  RunRanks(
      2, [](int, Communicator& comm) { EXPECT_STREQ(comm.Backend(), "gloo"); }, nullptr);
  CommConfig c;
  c.store = std::make_shared<MemoryStore>();
  auto comm = CreateCommunicator("auto", c);
  EXPECT_STREQ(comm->Backend(), "gloo");
#if COHORT_HAVE_MPI
  try {
    CreateCommunicator("mpi", c);
    FAIL();
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("mpirun"), std::string::npos) << e.what();
  }
#endif
}

// Polls until w completes or `limit` passes, without calling Wait() (which could run it inline).
bool CompletesOnItsOwn(Work& w, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!w.IsCompleted()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(100us);
  }
  return true;
}

TEST(Executor, OpsNobodyWaitsForStillRun) {
  RunRanks(2, [](int r, Communicator& comm) {
    float x = 1;
    auto w = comm.AllReduce(TensorView(&x, 1, DType::kFloat32), ReduceOp::kSum);
    EXPECT_TRUE(CompletesOnItsOwn(*w, 2s));
    EXPECT_EQ(x, 2);
  });
}

TEST(Executor, AfterARunOfSynchronousOpsAsyncOpsStillRun) {
  RunRanks(2, [](int r, Communicator& comm) {
    float x = 1;
    for (int i = 0; i < 50; ++i) {
      x = 1;
      comm.AllReduce(TensorView(&x, 1, DType::kFloat32), ReduceOp::kSum)->Wait();
    }
    // Now nobody waits: the worker must notice within its lazy polling period.
    std::vector<float> v(1000, 1.0f);
    std::vector<WorkPtr> works;
    for (int i = 0; i < 5; ++i) {
      works.push_back(
          comm.AllReduce(TensorView(v.data(), v.size(), DType::kFloat32), ReduceOp::kSum));
    }
    for (auto& w : works) EXPECT_TRUE(CompletesOnItsOwn(*w, 500ms));
    EXPECT_EQ(v[0], 32.0f);  // doubled five times
  });
}

TEST(Executor, PostedRecvDoesNotBlockLaterCollectives) {
  // Rank 0 posts a recv, then all-reduces; rank 1 sends only after that all-reduce is done.
  // With recvs executed in line with collectives this would deadlock.
  RunRanks(2, [](int r, Communicator& comm) {
    float msg = r == 1 ? 42.0f : 0.0f, x = 1;
    OpOptions o;
    o.timeout = 5s;
    WorkPtr recv;
    if (r == 0) recv = comm.Recv(TensorView(&msg, 1, DType::kFloat32), 1, o);
    comm.AllReduce(TensorView(&x, 1, DType::kFloat32), ReduceOp::kSum, o)->Wait();
    if (r == 1) comm.Send(TensorView(&msg, 1, DType::kFloat32), 0, o)->Wait();
    if (r == 0) {
      recv->Wait();
      EXPECT_EQ(msg, 42.0f);
    }
    EXPECT_EQ(x, 2.0f);
  });
}

TEST(Failures, OpsAfterAFailureFailFast) {
  // Rank 1 never calls the second all-reduce: rank 0 times out naming it, then is broken.
  RunRanks(2, [](int r, Communicator& comm) {
    float x = 1;
    comm.AllReduce(TensorView(&x, 1, DType::kFloat32), ReduceOp::kSum)->Wait();
    if (r == 1) {
      std::this_thread::sleep_for(2500ms);
      return;
    }
    OpOptions o;
    o.timeout = 1s;
    try {
      comm.AllReduce(TensorView(&x, 1, DType::kFloat32), ReduceOp::kSum, o)->Wait();
      FAIL() << "no timeout";
    } catch (const Timeout& e) {
      EXPECT_NE(std::string(e.what()).find("rank 1 never reached it"), std::string::npos)
          << e.what();
    }
    EXPECT_TRUE(comm.IsBroken());
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(comm.Barrier()->Wait(), PeerFailure);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms);
  });
}
#endif  // COHORT_HAVE_GLOO

// ---- the health monitor on its own ----

TEST(Health, NamesRanksBehindAndSilent) {
  auto store = std::make_shared<MemoryStore>();
  auto m0 = std::make_unique<HealthMonitor>(store, "t", 0, 4, 50ms);
  auto m1 = std::make_unique<HealthMonitor>(store, "t", 1, 4, 50ms);
  auto m2 = std::make_unique<HealthMonitor>(store, "t", 2, 4, 50ms);
  m0->Started(5, "allreduce");
  m1->Started(4, "broadcast");  // behind
  m2->Started(5, "allreduce");
  std::this_thread::sleep_for(100ms);
  m2.reset();  // rank 2 dies: its heartbeat stops
  // rank 3 never reports at all
  auto v = m0->Inspect(5, "allreduce");
  EXPECT_EQ(v.behind, std::vector<int>{1});
  EXPECT_EQ(v.silent, std::vector<int>{2});
  EXPECT_EQ(v.missing, std::vector<int>{3});
  EXPECT_NE(v.text.find("rank 1 never reached it (its last collective was #4 broadcast)"),
            std::string::npos)
      << v.text;
  EXPECT_NE(v.text.find("rank 2 stopped responding"), std::string::npos) << v.text;
  EXPECT_NE(v.text.find("rank 3 never reported"), std::string::npos) << v.text;
}

TEST(Health, EveryoneAliveAndArrivedPointsAtAMismatch) {
  auto store = std::make_shared<MemoryStore>();
  HealthMonitor m0(store, "t", 0, 2, 50ms), m1(store, "t", 1, 2, 50ms);
  m0.Started(3, "allreduce");
  m1.Started(3, "allreduce");
  std::this_thread::sleep_for(100ms);
  auto v = m0.Inspect(3, "allreduce");
  EXPECT_TRUE(v.behind.empty() && v.silent.empty() && v.missing.empty());
  EXPECT_NE(v.text.find("COHORT_DEBUG_COLLECTIVES"), std::string::npos) << v.text;
}

}  // namespace
}  // namespace cohort::testing
