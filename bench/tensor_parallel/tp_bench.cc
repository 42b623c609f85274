// Tensor-parallel benchmark (issue 11): the step time (forward + backward) of a Megatron MLP
// block, ColumnParallelLinear(h, 4h, gather_output=false) -> GELU -> RowParallelLinear(4h, h,
// input_is_parallel=true), over every rank of the job as one tp group, against the same block
// unsharded (torch::nn::Linear) in one process; and the bytes the region functions handed to the
// collectives per step (TensorParallelComm()) against Megatron's formula: one all-reduce of
// b*s*h elements forward and one backward, of which a ring moves 2(tp-1)/tp per rank.
//
// The two sides alternate in one run (timings here vary run to run): each round all ranks time
// --steps tp steps, then rank 0 times --steps unsharded steps while the other ranks wait in a
// barrier. Medians over --rounds are printed by rank 0.
//
//   cohort launch --nproc-per-node 2 -- build/bin/tp_bench
#include <fmt/format.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/linear.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <vector>

#include "runtime/process_group.h"
#include "runtime/tensor_parallel.h"

namespace {

using cohort::runtime::ProcessGroup;
namespace rt = cohort::runtime;
namespace F = torch::nn::functional;
using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Seconds per step of step() over n steps.
template <typename Step>
double TimeSteps(int n, Step step) {
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) step();
  return std::chrono::duration<double>(Clock::now() - t0).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tensor-parallel MLP block: tp step time and bytes against one process"};
  int64_t batch = 4, seq = 128, hidden = 512;
  int steps = 3, rounds = 5, warmup = 2;
  app.add_option("--batch", batch);
  app.add_option("--seq", seq);
  app.add_option("--hidden", hidden, "h; the MLP's inner size is 4h");
  app.add_option("--steps", steps, "steps per round and side");
  app.add_option("--rounds", rounds);
  app.add_option("--warmup", warmup);
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(1);
    auto tp = ProcessGroup::FromEnv();
    const bool lead = tp->Rank() == 0;
    torch::manual_seed(1);
    rt::ColumnParallelLinear fc1(hidden, 4 * hidden, tp, {true, false});
    rt::RowParallelLinear fc2(4 * hidden, hidden, tp, {true, true});
    torch::manual_seed(1);
    torch::nn::Linear ref1(hidden, 4 * hidden), ref2(4 * hidden, hidden);
    auto x = torch::randn({batch, seq, hidden}).requires_grad_(true);  // an activation
    auto tp_step = [&] { fc2.Forward(F::gelu(fc1.Forward(x))).sum().backward(); };
    auto ref_step = [&] { ref2(F::gelu(ref1(x))).sum().backward(); };

    for (int i = 0; i < warmup; ++i) tp_step();
    if (lead) {
      for (int i = 0; i < warmup; ++i) ref_step();
    }
    rt::ResetTensorParallelComm();
    tp_step();
    const auto comm = rt::TensorParallelComm();

    std::vector<double> tp_times, ref_times;
    for (int r = 0; r < rounds; ++r) {
      tp->Barrier();
      tp_times.push_back(TimeSteps(steps, tp_step));
      tp->Barrier();
      if (lead) ref_times.push_back(TimeSteps(steps, ref_step));
    }
    tp->Barrier();
    if (!lead) return 0;

    const int p = tp->Size();
    const int64_t elems = batch * seq * hidden;
    const int64_t formula = p == 1 ? 0 : 2 * elems * 4;  // fwd + bwd all-reduce, float32
    const double ring = p == 1 ? 0 : formula * 2.0 * (p - 1) / p;
    const double t_tp = Median(tp_times), t_ref = Median(ref_times);
    std::cout << fmt::format("MLP block b={} s={} h={} (inner {}), float32, tp={} ({} backend)\n",
                             batch, seq, hidden, 4 * hidden, p, tp->Backend())
              << fmt::format("{:<34} {:>14}\n", "", "per step")
              << fmt::format("{:<34} {:>11.2f} ms\n", "one process (unsharded), median",
                             t_ref * 1e3)
              << fmt::format("{:<34} {:>11.2f} ms\n", fmt::format("tp={}, median", p), t_tp * 1e3)
              << fmt::format("{:<34} {:>14.2f}\n", "speedup (one process / tp)", t_ref / t_tp)
              << fmt::format("{:<34} {:>14}\n", "all-reduces counted", comm.all_reduces)
              << fmt::format("{:<34} {:>14}\n", "all-reduce bytes counted", comm.all_reduce_bytes)
              << fmt::format("{:<34} {:>14}\n", "Megatron: 2 x b*s*h x 4 B", formula)
              << fmt::format("{:<34} {:>14}\n", "all-gather bytes counted", comm.all_gather_bytes)
              << fmt::format("{:<34} {:>14.0f}\n", "ring bytes per rank 2(p-1)/p", ring);
    std::cout << "tp step times (ms):";
    for (double t : tp_times) std::cout << fmt::format(" {:.2f}", t * 1e3);
    std::cout << "\none-process step times (ms):";
    for (double t : ref_times) std::cout << fmt::format(" {:.2f}", t * 1e3);
    std::cout << std::endl;
    return comm.all_reduce_bytes == formula ? 0 : 3;
  } catch (const std::exception& e) {
    std::cerr << "ERROR " << e.what() << std::endl;
    return 2;
  }
}
