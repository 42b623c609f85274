// pipeline_bench: throughput, each stage's idle (bubble) fraction beside the theory
// (p-1)/(m+p-1), and the peak activation bytes a stage keeps for backward, for GPipe and 1F1B
// over micro-batch counts. Every rank is one stage (start with `cohort launch --nproc-per-node P`
// or mpirun). Each stage's compute is a Linear plus a fixed sleep per micro-batch (forward and
// backward, --forward-ms/--backward-ms), so that the bubble is measurable on a machine with fewer
// cores than stages: the table says so. Rank 0 prints one row per (schedule, m).
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <thread>

#include "runtime/pipeline.h"
#include "runtime/process_group.h"

namespace {

using namespace cohort::runtime;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

void Busy(double ms, bool spin) {
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(ms * 1e3));
  if (!spin) {
    std::this_thread::sleep_until(until);
    return;
  }
  while (std::chrono::steady_clock::now() < until) {
  }
}

// Identity whose forward and backward each take a fixed time.
struct FixedCost : torch::autograd::Function<FixedCost> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, double fwd_ms, double bwd_ms,
                               bool spin) {
    ctx->saved_data["bwd"] = bwd_ms;
    ctx->saved_data["spin"] = spin;
    Busy(fwd_ms, spin);
    return x.clone();
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list g) {
    Busy(ctx->saved_data["bwd"].toDouble(), ctx->saved_data["spin"].toBool());
    return {g[0], torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

struct Result {
  double step_s, idle, peak_bytes;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pipeline schedule benchmark"};
  std::vector<int> micros = {1, 2, 4, 8, 16};
  std::vector<std::string> schedules = {"gpipe", "1f1b"};
  int64_t batch = 64, width = 256;
  int steps = 3;
  double fwd_ms = 20, bwd_ms = 40;  // ~1.5 ms of messaging per slot stays small beside it
  bool spin = false;
  app.add_option("--micro", micros, "micro-batch counts");
  app.add_option("--schedules", schedules);
  app.add_option("--batch", batch);
  app.add_option("--width", width);
  app.add_option("--steps", steps, "measured steps per row (after one warm-up step)");
  app.add_option("--forward-ms", fwd_ms, "fixed compute per micro-batch forward, per stage");
  app.add_option("--backward-ms", bwd_ms, "fixed compute per micro-batch backward, per stage");
  app.add_flag("--spin", spin, "busy-wait instead of sleeping (needs a core per stage)");
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(1);
    auto pp = ProcessGroup::FromEnv();
    const int p = pp->Size();
    auto layer = std::make_shared<torch::nn::LinearImpl>(width, width);
    auto forward = [&](const torch::Tensor& x) {
      return FixedCost::apply(layer->forward(x), fwd_ms, bwd_ms, spin);
    };
    if (pp->Rank() == 0) {
      std::cout << fmt::format(
          "# p={} batch={} width={}; per stage and micro-batch a fixed {} of {} ms forward and "
          "{} ms backward (so the bubble is measurable with fewer cores than stages)\n",
          p, batch, width, spin ? "busy-wait" : "sleep", fwd_ms, bwd_ms);
      std::cout << fmt::format("{:>8} {:>4} {:>10} {:>9} {:>8} {:>9} {:>9} {:>12} {:>9} {:>8}\n",
                               "schedule", "m", "samples/s", "step_ms", "theory", "idle_max",
                               "idle_min", "peak_act_B", "vs_gpipe", "targets");
    }
    std::map<int, double> gpipe_peak;
    for (const auto& sched : schedules) {
      for (int m : micros) {
        PipelineOptions opts;
        opts.micro_batches = m;
        opts.schedule = ParsePipelineSchedule(sched);
        Pipeline pipe(pp, layer, forward, opts);
        auto x = torch::randn({batch, width}), y = torch::randn({batch, width});
        auto mse = [](const at::Tensor& o, const at::Tensor& t) { return torch::mse_loss(o, t); };
        double step_s = 0, idle = 0;
        for (int s = 0; s <= steps; ++s) {
          pipe.Step(x, y, mse);
          if (s == 0) continue;  // warm-up
          step_s += pipe.Stats().step_seconds / steps;
          idle += pipe.Stats().IdleFraction() / steps;
        }
        // Every stage's numbers to rank 0.
        auto mine =
            torch::tensor({step_s, idle, static_cast<double>(pipe.Stats().peak_activation_bytes)},
                          torch::kDouble);
        auto all = torch::empty({3 * p}, torch::kDouble);
        pp->AllGather(mine, all)->Wait();
        if (pp->Rank() != 0) continue;
        auto a = all.reshape({p, 3});
        const double mean_step = a.select(1, 0).mean().item<double>();
        const double idle_max = a.select(1, 1).max().item<double>();
        const double idle_min = a.select(1, 1).min().item<double>();
        const double peak = a.select(1, 2).max().item<double>();
        if (sched == "gpipe") gpipe_peak[m] = peak;
        const std::string vs =
            gpipe_peak.count(m) ? fmt::format("{:.3f}", peak / gpipe_peak[m]) : "-";
        // The targets: bubble within 0.05 of theory at m >= 2p; 1F1B's peak activations
        // at most (p/m) x GPipe's + 10%.
        std::string targets = "-";
        if (m >= 2 * p) {
          bool ok = idle_max - TheoreticalBubble(p, m) <= 0.05;
          if (sched == "1f1b" && gpipe_peak.count(m)) {
            ok = ok && peak <= 1.1 * static_cast<double>(p) / m * gpipe_peak[m];
          }
          targets = ok ? "met" : "missed";
        }
        std::cout << fmt::format(
                         "{:>8} {:>4} {:>10.0f} {:>9.1f} {:>8.3f} {:>9.3f} {:>9.3f} {:>12.0f} "
                         "{:>9} {:>8}\n",
                         sched, m, batch / mean_step, mean_step * 1e3, TheoreticalBubble(p, m),
                         idle_max, idle_min, peak, vs, targets)
                  << std::flush;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ERROR " << e.what() << std::endl;
    return 1;
  }
}
