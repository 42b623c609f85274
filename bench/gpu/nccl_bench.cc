// NCCL all-reduce on CUDA buffers at one rank (the GPU machine has one GPU; NCCL takes one rank
// per GPU), in the format of nccl-tests: per size the time, algbw and busbw of an in-place f32 sum.
// At one rank nccl-tests' bus factor 2(n-1)/n is 0, so busbw is 0 by definition; algbw (bytes /
// time) is what one rank measures: the cost of the call, its launch and the on-device copy.
// Run by scripts/device-check; without a GPU it says so and exits 0.
//   nccl_bench [--min-bytes 8] [--max-bytes 256M] [--iters 20] [--json FILE]
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "collectives/nccl/cuda_device.h"
#include "collectives/registry.h"
#include "collectives/store/memory_store.h"
#include "common/check_cuda.h"

namespace cohort::bench {
namespace {

using namespace collectives;
using Clock = std::chrono::steady_clock;

int Main(int argc, char** argv) {
  size_t min_bytes = 8, max_bytes = size_t{256} << 20;
  int iters = 20, warmup = 5;
  std::string json_path;
  CLI::App app{"NCCL all-reduce at one rank on CUDA buffers (nccl-tests format)"};
  app.add_option("--min-bytes", min_bytes);
  app.add_option("--max-bytes", max_bytes);
  app.add_option("--iters", iters);
  app.add_option("--warmup", warmup);
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);

  std::string why;
  if (CudaDeviceCount(&why) == 0) {
    fmt::print("nccl_bench: skipped: {}\n", why);
    return 0;
  }
  CommConfig cfg;
  cfg.rank = 0;
  cfg.size = 1;
  cfg.store = std::make_shared<MemoryStore>();
  cfg.name = "nccl-bench";
  auto comm = CreateCommunicator("nccl", cfg, DeviceType::kCUDA);
  int dev = 0;
  COHORT_CHECK_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  COHORT_CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  void* buf = nullptr;
  COHORT_CHECK_CUDA(cudaMalloc(&buf, max_bytes));
  COHORT_CHECK_CUDA(cudaMemset(buf, 0, max_bytes));
  COHORT_CHECK_CUDA(cudaDeviceSynchronize());

  fmt::print("# nccl all-reduce, f32 sum in place, 1 rank, backend {} on {} (device {})\n",
             comm->Backend(), prop.name, dev);
  fmt::print("# {:>12} {:>10} {:>10} {:>10}\n", "bytes", "time_us", "algbw_GB/s", "busbw_GB/s");
  nlohmann::json rows = nlohmann::json::array();
  for (size_t bytes = std::max<size_t>(min_bytes, 4); bytes <= max_bytes; bytes *= 4) {
    const size_t n = bytes / 4;
    TensorView t(buf, n, DType::kFloat32, Device{DeviceType::kCUDA, dev});
    for (int i = 0; i < warmup; ++i) comm->AllReduce(t, ReduceOp::kSum)->Wait();
    std::vector<double> us;
    for (int i = 0; i < iters; ++i) {
      const auto t0 = Clock::now();
      comm->AllReduce(t, ReduceOp::kSum)->Wait();
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    const double med = us[us.size() / 2];
    const double algbw = static_cast<double>(n * 4) / (med * 1e3);  // bytes/us/1e3 = GB/s
    const double busbw = algbw * 0.0;                               // 2(n-1)/n at n = 1
    fmt::print("  {:>12} {:>10.1f} {:>10.2f} {:>10.2f}\n", n * 4, med, algbw, busbw);
    rows.push_back(
        {{"bytes", n * 4}, {"time_us", med}, {"algbw_gbs", algbw}, {"busbw_gbs", busbw}});
  }
  COHORT_CHECK_CUDA(cudaFree(buf));
  if (!json_path.empty()) {
    std::ofstream(json_path) << nlohmann::json{{"device", prop.name}, {"rows", rows}}.dump(1);
  }
  return 0;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  try {
    return cohort::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "nccl_bench: {}\n", e.what());
    return 1;
  }
}
