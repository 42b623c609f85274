// GPU-to-host checkpoint staging (phase one of a save: the copy out of the model) on the GPU
// machine: a CUDA buffer of --mib MiB copied into host memory four ways, each the median of
// --reps copies, in GB/s:
//   to_cpu_then_pool: what runtime/state_tensors.cc's HostCopy does today for a CUDA tensor
//                     (t.to(kCPU) into fresh pageable memory, then memcpy into the pool's buffer)
//   pool_pageable:    cudaMemcpy straight into a warm checkpoint::HostBufferPool buffer
//   pool_pinned:      the same pool buffer after cudaHostRegister (pinned, DMA straight into it)
//   cuda_host_alloc:  cudaMallocHost memory (the copy engine's ceiling)
// Plain CUDA runtime and cohort_checkpoint: no libtorch. Without a GPU it says so and exits 0.
//   staging_bench [--mib 1024] [--reps 5] [--json FILE]
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/host_buffer_pool.h"
#include "collectives/nccl/cuda_device.h"
#include "common/check_cuda.h"

namespace cohort::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MedianGbs(size_t bytes, int reps, const std::function<void()>& copy) {
  copy();  // warm: first-touch page faults and registration are not the steady state
  std::vector<double> s;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    copy();
    s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return static_cast<double>(bytes) / s[s.size() / 2] / 1e9;
}

int Main(int argc, char** argv) {
  size_t mib = 1024;
  int reps = 5;
  std::string json_path;
  CLI::App app{"GPU-to-host checkpoint staging bandwidth"};
  app.add_option("--mib", mib);
  app.add_option("--reps", reps);
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);
  std::string why;
  if (collectives::CudaDeviceCount(&why) == 0) {
    fmt::print("staging_bench: skipped: {}\n", why);
    return 0;
  }
  const size_t bytes = mib << 20;
  void* dev = nullptr;
  COHORT_CHECK_CUDA(cudaMalloc(&dev, bytes));
  COHORT_CHECK_CUDA(cudaMemset(dev, 1, bytes));
  COHORT_CHECK_CUDA(cudaDeviceSynchronize());

  checkpoint::HostBufferPool pool;
  const std::vector<int64_t> shape = {static_cast<int64_t>(bytes)};
  auto pooled = pool.Allocate("model/w", collectives::DType::kUInt8, shape);
  void* pool_buf = pooled.mutable_data();
  std::memset(pool_buf, 0, bytes);  // warm, as from the second save on

  nlohmann::json out = {{"bytes", bytes}};
  out["to_cpu_then_pool_gbs"] = MedianGbs(bytes, reps, [&] {
    void* fresh = std::malloc(bytes);  // t.to(kCPU): a new pageable tensor each save
    COHORT_CHECK_CUDA(cudaMemcpy(fresh, dev, bytes, cudaMemcpyDeviceToHost));
    std::memcpy(pool_buf, fresh, bytes);
    std::free(fresh);
  });
  out["pool_pageable_gbs"] = MedianGbs(bytes, reps, [&] {
    COHORT_CHECK_CUDA(cudaMemcpy(pool_buf, dev, bytes, cudaMemcpyDeviceToHost));
  });
  // The pool's buffers come from aligned_alloc (64-byte alignment): should registering them
  // fail, that is a finding to report, not a reason to lose the other numbers.
  const cudaError_t reg = cudaHostRegister(pool_buf, bytes, cudaHostRegisterDefault);
  if (reg == cudaSuccess) {
    out["pool_pinned_gbs"] = MedianGbs(bytes, reps, [&] {
      COHORT_CHECK_CUDA(cudaMemcpy(pool_buf, dev, bytes, cudaMemcpyDeviceToHost));
    });
    COHORT_CHECK_CUDA(cudaHostUnregister(pool_buf));
  } else {
    (void)cudaGetLastError();
    out["pool_pinned_gbs"] = nullptr;
    out["pool_pinned_error"] = std::string("cudaHostRegister: ") + cudaGetErrorString(reg);
  }
  void* pinned = nullptr;
  COHORT_CHECK_CUDA(cudaMallocHost(&pinned, bytes));
  out["cuda_host_alloc_gbs"] = MedianGbs(bytes, reps, [&] {
    COHORT_CHECK_CUDA(cudaMemcpy(pinned, dev, bytes, cudaMemcpyDeviceToHost));
  });
  COHORT_CHECK_CUDA(cudaFreeHost(pinned));
  COHORT_CHECK_CUDA(cudaFree(dev));

  fmt::print("# GPU-to-host staging of {} MiB, GB/s (median of {})\n", mib, reps);
  for (const char* k :
       {"to_cpu_then_pool_gbs", "pool_pageable_gbs", "pool_pinned_gbs", "cuda_host_alloc_gbs"}) {
    if (out[k].is_null()) {
      fmt::print("  {:<22} {:>8}  {}\n", k, "n/a", out.value("pool_pinned_error", ""));
    } else {
      fmt::print("  {:<22} {:>8.2f}\n", k, out[k].get<double>());
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(1);
  return 0;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  try {
    return cohort::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "staging_bench: {}\n", e.what());
    return 1;
  }
}
