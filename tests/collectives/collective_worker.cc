// One rank of a real multi-process world, started by multiproc_test (directly, or by mpirun).
// Modes:
//   matrix    every op x dtype x count, each result checked against expected_values.h
//   hang      rank --victim stops calling collectives at op --at (sleeps); others must time out
//   kill      rank --victim SIGKILLs itself in the middle of op --at; others must fail
//   mismatch  rank 0 passes 7 elements, the others 9
//   send      every rank sends one element to the next (a backend without send must refuse it)
// --skip reducescatter,sendrecv leaves out the ops a backend lacks (ps).
// Exit codes: 0 all checks passed, 1 a value was wrong, 3 an operation threw (message on stderr).
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/registry.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/log.h"
#include "common/world.h"
#include "tests/collectives/expected_values.h"

namespace cohort::testing {
namespace {

using namespace collectives;

// InputValue() repeats every 9 elements; buffers are filled and checked a tile of periods at a
// time.
constexpr size_t kPeriod = 9;
constexpr size_t kTile = kPeriod * 512;

struct Options {
  std::string backend = "gloo";
  std::string mode = "matrix";
  std::vector<size_t> counts = {0, 1, 7, 1031};
  std::vector<std::string> dtypes = {"f32", "f64", "f16", "bf16", "i32", "i64", "u8"};
  int victim = -1;
  int at = 3;
  size_t fault_elems = 1 << 20;   // floats per all-reduce in hang/kill mode
  std::vector<std::string> skip;  // "reducescatter", "sendrecv"
};

class Checker {
 public:
  Checker(Communicator& comm, Store* store, const std::vector<std::string>& skip)
      : comm_(comm), store_(store) {
    for (const auto& s : skip) {
      skip_reducescatter_ = skip_reducescatter_ || s == "reducescatter";
      skip_sendrecv_ = skip_sendrecv_ || s == "sendrecv";
    }
  }

  int failures() const { return failures_; }
  int checks() const { return checks_; }

  void RunAll(DType dtype, size_t n) {
    const int size = comm_.Size();
    // Grown, never shrunk or re-zeroed: fresh pages per dtype cost more than the collectives.
    Reserve(in_, n * size * ElementSize(dtype) + 8);
    Reserve(out_, n * size * ElementSize(dtype) + 8);
    for (ReduceOp op : kAllReduceOps) AllReduce(dtype, n, op, false);
    AllReduce(dtype, n, ReduceOp::kSum, true);
    AllReduce(dtype, n, ReduceOp::kAvg, true);
    Broadcast(dtype, n);
    AllGather(dtype, n, false);
    AllGather(dtype, n, true);
    if (!skip_reducescatter_) {
      for (ReduceOp op : kAllReduceOps) ReduceScatter(dtype, n, op, false);
      ReduceScatter(dtype, n, ReduceOp::kSum, true);
      ReduceScatter(dtype, n, ReduceOp::kMax, true);
    }
    if (size > 1 && !skip_sendrecv_) SendRecvRing(dtype, n);
    AsyncBatch(dtype, n);
    Barrier();
  }

 private:
  // InputValue() has period kPeriod in the element index: build one tile of periods, then copy
  // it.
  void Fill(DType dtype, void* buf, int r, size_t n, size_t offset = 0) {
    const size_t es = ElementSize(dtype);
    std::vector<char> tile(kTile * es);
    for (size_t j = 0; j < kPeriod; ++j) {
      StoreExact(dtype, tile.data(), j, InputValue(dtype, r, offset + j, k_));
    }
    for (size_t t = kPeriod; t < kTile; t += kPeriod) {
      std::memcpy(tile.data() + t * es, tile.data(), kPeriod * es);
    }
    char* out = static_cast<char*>(buf);
    for (size_t i = 0; i < n; i += kTile) {
      std::memcpy(out + i * es, tile.data(), std::min(kTile, n - i) * es);
    }
  }

  void Expect(bool ok, const std::string& what) {
    ++checks_;
    if (!ok && failures_++ < 20) fmt::print(stderr, "rank {} FAIL {}\n", comm_.Rank(), what);
  }

  // Checks n elements of buf against want(i); reports the first mismatch only. Every expected
  // value here has period kPeriod in i within a block of `block` elements (a rank's slice for
  // allgather), so want() is evaluated once per period and block, not per element. The buffer is
  // compared as bytes, a tile of periods per memcmp, against the expected values stored in the
  // dtype (when that encoding itself passes Close: always but for some averages); only a tile
  // that differs is decoded element by element. At 16 Mi elements, decoding every element was
  // most of the matrix test's time.
  template <typename F>
  void ExpectAll(const std::string& what, DType dtype, ReduceOp op, const void* buf, size_t n,
                 F want, size_t block = 0) {
    if (block == 0) block = std::max<size_t>(n, 1);
    const size_t es = ElementSize(dtype);
    const char* bytes = static_cast<const char*>(buf);
    double table[kPeriod];
    std::vector<char> expect(kTile * es);
    for (size_t start = 0; start < n; start += block) {
      const size_t len = std::min(block, n - start);
      bool encoded = true;  // expect holds values that pass Close
      for (size_t j = 0; j < kPeriod && j < len; ++j) {
        table[j] = want(start + j);
        StoreExact(dtype, expect.data(), j, table[j]);
        encoded = encoded && Close(dtype, op, Load(dtype, expect.data(), j), table[j]);
      }
      for (size_t t = kPeriod; t < kTile; t += kPeriod) {
        std::memcpy(expect.data() + t * es, expect.data(), kPeriod * es);
      }
      for (size_t i = start; i < start + len; i += kTile) {
        const size_t m = std::min(kTile, start + len - i);
        if (encoded && std::memcmp(bytes + i * es, expect.data(), m * es) == 0) continue;
        for (size_t j = 0; j < m; ++j) {
          const double got = Load(dtype, buf, i + j);
          if (!Close(dtype, op, got, table[j % kPeriod])) {
            Expect(false, fmt::format("{} {}[{}] element {}: got {} want {}", what,
                                      DTypeName(dtype), n, i + j, got, table[j % kPeriod]));
            return;
          }
        }
      }
    }
    Expect(true, what);
  }

  void ExpectInputUntouched(const std::string& what, DType dtype, size_t n, size_t offset = 0) {
    const int r = comm_.Rank();
    const int k = k_;
    ExpectAll(what + " left its input alone", dtype, ReduceOp::kSum, in_.data(), n,
              [&](size_t i) { return InputValue(dtype, r, offset + i, k); });
  }

  void AllReduce(DType dtype, size_t n, ReduceOp op, bool in_place) {
    ++k_;
    const int k = k_, size = comm_.Size();
    Fill(dtype, in_.data(), comm_.Rank(), n);
    TensorView in(in_.data(), n, dtype), out(out_.data(), n, dtype);
    comm_.AllReduce(in, in_place ? in : out, op)->Wait();
    const std::string what =
        fmt::format("allreduce {} {}", ReduceOpName(op), in_place ? "in-place" : "out-of-place");
    ExpectAll(what, dtype, op, in_place ? in_.data() : out_.data(), n,
              [&](size_t i) { return Expected(dtype, op, size, i, k); });
    if (!in_place) ExpectInputUntouched(what, dtype, n);
  }

  void Broadcast(DType dtype, size_t n) {
    ++k_;
    const int k = k_, root = k_ % comm_.Size();
    Fill(dtype, in_.data(), comm_.Rank(), n);
    comm_.Broadcast(TensorView(in_.data(), n, dtype), root)->Wait();
    ExpectAll(fmt::format("broadcast from {}", root), dtype, ReduceOp::kSum, in_.data(), n,
              [&](size_t i) { return InputValue(dtype, root, i, k); });
  }

  void AllGather(DType dtype, size_t n, bool in_place) {
    ++k_;
    const int k = k_, size = comm_.Size(), r = comm_.Rank();
    const size_t es = ElementSize(dtype);
    TensorView out(out_.data(), n * size, dtype);
    TensorView in = in_place ? out.Slice(r * n, n) : TensorView(in_.data(), n, dtype);
    Fill(dtype, in.data, r, n);
    comm_.AllGather(in, out)->Wait();
    (void)es;
    ExpectAll(
        in_place ? "allgather in-place" : "allgather out-of-place", dtype, ReduceOp::kSum,
        out_.data(), n * size,
        [&](size_t i) {
          return InputValue(dtype, static_cast<int>(i / std::max<size_t>(n, 1)),
                            i % std::max<size_t>(n, 1), k);
        },
        n);
    if (!in_place) ExpectInputUntouched("allgather", dtype, n);
  }

  void ReduceScatter(DType dtype, size_t n, ReduceOp op, bool in_place) {
    ++k_;
    const int k = k_, size = comm_.Size(), r = comm_.Rank();
    Fill(dtype, in_.data(), r, n * size);
    TensorView in(in_.data(), n * size, dtype);
    TensorView out = in_place ? in.Slice(r * n, n) : TensorView(out_.data(), n, dtype);
    comm_.ReduceScatter(in, out, op)->Wait();
    const std::string what = fmt::format("reducescatter {} {}", ReduceOpName(op),
                                         in_place ? "in-place" : "out-of-place");
    ExpectAll(what, dtype, op, out.data, n,
              [&](size_t i) { return Expected(dtype, op, size, r * n + i, k); });
    if (!in_place) ExpectInputUntouched(what, dtype, n * size);
  }

  void SendRecvRing(DType dtype, size_t n) {
    ++k_;
    const int k = k_, size = comm_.Size(), r = comm_.Rank();
    const int right = (r + 1) % size, left = (r + size - 1) % size;
    Fill(dtype, in_.data(), r, n);
    OpOptions opts;
    opts.tag = 7;
    auto recv = comm_.Recv(TensorView(out_.data(), n, dtype), left, opts);
    auto send = comm_.Send(TensorView(in_.data(), n, dtype), right, opts);
    send->Wait();
    recv->Wait();
    ExpectAll(fmt::format("recv from {}", left), dtype, ReduceOp::kSum, out_.data(), n,
              [&](size_t i) { return InputValue(dtype, left, i, k); });
  }

  // Several operations in flight at once, waited for out of order.
  void AsyncBatch(DType dtype, size_t n) {
    const int size = comm_.Size(), r = comm_.Rank();
    for (auto& b : batch_) Reserve(b, n * ElementSize(dtype) + 8);
    auto& bufs = batch_;
    std::vector<WorkPtr> works;
    const int k0 = k_ + 1;
    for (int j = 0; j < 3; ++j) {
      ++k_;
      Fill(dtype, bufs[j].data(), r, n);
      works.push_back(comm_.AllReduce(TensorView(bufs[j].data(), n, dtype), ReduceOp::kMax));
    }
    for (int j = 2; j >= 0; --j) works[j]->Wait();
    for (int j = 0; j < 3; ++j) {
      ExpectAll(fmt::format("async allreduce {} of 3", j), dtype, ReduceOp::kMax, bufs[j].data(), n,
                [&](size_t i) { return Expected(dtype, ReduceOp::kMax, size, i, k0 + j); });
    }
  }

  // After a barrier every rank must have announced its arrival before it.
  void Barrier() {
    ++k_;
    const std::string prefix = fmt::format("test/barrier/{}/", k_);
    if (store_) store_->Set(prefix + std::to_string(comm_.Rank()), "1");
    comm_.Barrier()->Wait();
    if (store_) {
      Expect(store_->List(prefix).size() == static_cast<size_t>(comm_.Size()),
             fmt::format("barrier {}: not every rank had arrived", k_));
    }
  }

  static void Reserve(std::vector<char>& v, size_t bytes) {
    if (v.size() < bytes) v.resize(bytes);
  }

  Communicator& comm_;
  Store* store_;
  std::vector<char> in_, out_;
  std::vector<char> batch_[3];
  bool skip_reducescatter_ = false;
  bool skip_sendrecv_ = false;
  int k_ = 0;
  int failures_ = 0;
  int checks_ = 0;
};

int RunMatrix(Communicator& comm, Store* store, const Options& o) {
  Checker c(comm, store, o.skip);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t n : o.counts) {
    for (const auto& d : o.dtypes) c.RunAll(ParseDType(d), n);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("rank {} of {} ({}): {} checks, {} failed, {:.2f} s\n", comm.Rank(), comm.Size(),
             comm.Backend(), c.checks(), c.failures(), secs);
  return c.failures() ? 1 : 0;
}

// A loop of small all-reduces; the victim stops (hang) or dies (kill) at op `at`.
int RunFault(Communicator& comm, const Options& o) {
  std::vector<float> buf(o.fault_elems, 1.0f);
  for (int i = 1; i <= o.at + 2; ++i) {
    if (comm.Rank() == o.victim && i == o.at) {
      if (o.mode == "hang") {
        fmt::print("rank {} hangs before op {}\n", comm.Rank(), i);
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::minutes(10));
      } else {
        auto w =
            comm.AllReduce(TensorView(buf.data(), buf.size(), DType::kFloat32), ReduceOp::kSum);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ::kill(::getpid(), SIGKILL);
      }
    }
    comm.AllReduce(TensorView(buf.data(), buf.size(), DType::kFloat32), ReduceOp::kSum)->Wait();
    if (i == 2) {  // a test that injects a fault of its own waits for this line
      fmt::print("rank {} completed op 2\n", comm.Rank());
      std::fflush(stdout);
    }
  }
  return 0;
}

int RunMismatch(Communicator& comm) {
  std::vector<float> buf(9, 1.0f);
  const size_t n = comm.Rank() == 0 ? 7 : 9;
  comm.AllReduce(TensorView(buf.data(), n, DType::kFloat32), ReduceOp::kSum)->Wait();
  comm.Barrier()->Wait();
  return 0;
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"cohort collectives test worker"};
  app.add_option("--backend", o.backend);
  app.add_option("--mode", o.mode)->check(CLI::IsMember({"matrix", "hang", "kill", "mismatch", "send"}));
  app.add_option("--counts", o.counts)->delimiter(',');
  app.add_option("--dtypes", o.dtypes)->delimiter(',');
  app.add_option("--victim", o.victim);
  app.add_option("--at", o.at);
  app.add_option("--fault-elems", o.fault_elems, "floats per all-reduce in hang/kill mode");
  app.add_option("--skip", o.skip, "ops to leave out: reducescatter, sendrecv")->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  const World world = DetectWorld();
  log::SetRank(world.rank);
  std::shared_ptr<Store> store;
  if (env::kStore.IsSet() || env::kMasterAddr.IsSet()) store = ConnectStoreFromEnv();
  auto comm = CreateCommunicator(o.backend, CommConfig::FromEnv(world.rank, world.size, store));
  if (o.mode == "matrix") return RunMatrix(*comm, store.get(), o);
  if (o.mode == "mismatch") return RunMismatch(*comm);
  if (o.mode == "send") {
    float one = 1.0f;
    comm->Send(TensorView(&one, 1, DType::kFloat32), (world.rank + 1) % world.size)->Wait();
    return 0;
  }
  return RunFault(*comm, o);
}

}  // namespace
}  // namespace cohort::testing

int main(int argc, char** argv) {
  try {
    return cohort::testing::Main(argc, argv);
  } catch (const cohort::Error& e) {
    fmt::print(stderr, "ERROR [{}] {}\n", cohort::ErrorKindName(e.kind()), e.what());
    return 3;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ERROR [exception] {}\n", e.what());
    return 3;
  }
}
