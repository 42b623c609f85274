// One rank of netns_hier_test's bitwise check: all-reduces (sum, avg) of values whose sums round
// (mixed magnitudes, so the result depends on the order of the additions), checks each result
// against a double-precision reference within rounding, then all-gathers every rank's result and
// checks that all are bitwise equal to this rank's.
//   hier_worker [--backend gloo|ps] --counts 1031,1000003
// Prints "rank R: N all-reduces bitwise equal on every rank, M wrong"; exit 0 when M is 0, 1
// when a value or a rank differed, 3 when an operation threw.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstring>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/registry.h"
#include "collectives/store/store_from_env.h"
#include "common/log.h"
#include "common/world.h"

namespace cohort::testing {
namespace {

using namespace collectives;

// Rank r's element i: a few digits at magnitudes 1e-3 .. 1e3.
double Value(int r, size_t i) {
  const uint64_t h =
      (i + 1) * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(r) + 1) * 0xBF58476D1CE4E5B9ull;
  const double digits = static_cast<double>(h >> 44) / 1048576.0 - 0.5;  // [-0.5, 0.5)
  return digits * std::pow(10.0, static_cast<double>(static_cast<int>(i % 7) - 3));
}

template <typename T>
int Check(Communicator& comm, size_t n, ReduceOp op, DType dtype) {
  const int size = comm.Size(), me = comm.Rank();
  std::vector<T> buf(n), all(n * size);
  for (size_t i = 0; i < n; ++i) buf[i] = static_cast<T>(Value(me, i));
  comm.AllReduce(TensorView(buf.data(), n, dtype), op)->Wait();
  int wrong = 0;
  for (size_t i = 0; i < n && wrong < 5; ++i) {
    double want = 0, mag = 0;
    for (int r = 0; r < size; ++r) {
      want += static_cast<T>(Value(r, i));
      mag += std::fabs(static_cast<T>(Value(r, i)));
    }
    if (op == ReduceOp::kAvg) want /= size, mag /= size;
    const double tol = mag * (sizeof(T) == 4 ? 1e-6 : 1e-14) * size + 1e-30;
    if (std::fabs(buf[i] - want) > tol) {
      fmt::print(stderr, "rank {} FAIL {}[{}] element {}: got {} want {}\n", me, DTypeName(dtype),
                 n, i, static_cast<double>(buf[i]), want);
      ++wrong;
    }
  }
  comm.AllGather(TensorView(buf.data(), n, dtype), TensorView(all.data(), n * size, dtype))->Wait();
  for (int r = 0; r < size; ++r) {
    if (n && std::memcmp(all.data() + r * n, buf.data(), n * sizeof(T)) != 0) {
      fmt::print(stderr, "rank {} FAIL {}[{}]: rank {}'s result differs in its bits\n", me,
                 DTypeName(dtype), n, r);
      ++wrong;
    }
  }
  return wrong;
}

int Main(int argc, char** argv) {
  std::vector<size_t> counts = {1031, 1000003};
  std::string backend = "gloo";
  CLI::App app{"hierarchical all-reduce bitwise check worker"};
  app.add_option("--counts", counts)->delimiter(',');
  app.add_option("--backend", backend, "gloo (default) or ps");
  CLI11_PARSE(app, argc, argv);
  const World world = DetectWorld();
  log::SetRank(world.rank);
  auto store = ConnectStoreFromEnv();
  auto comm = CreateCommunicator(backend, CommConfig::FromEnv(world.rank, world.size, store));
  int ops = 0, wrong = 0;
  for (size_t n : counts) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
      wrong += Check<float>(*comm, n, op, DType::kFloat32);
      wrong += Check<double>(*comm, n, op, DType::kFloat64);
      ops += 2;
    }
  }
  comm->Barrier()->Wait();
  fmt::print("rank {}: {} all-reduces bitwise equal on every rank, {} wrong\n", world.rank, ops,
             wrong);
  return wrong ? 1 : 0;
}

}  // namespace
}  // namespace cohort::testing

int main(int argc, char** argv) {
  try {
    return cohort::testing::Main(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "ERROR {}\n", e.what());
    return 3;
  }
}
