// The Fashion-MNIST CNN (examples/fashion_mnist/model.cc) trained on synthetic batches on one GPU,
// for scripts/device-check: a CUDA-tensor DDP step at world 1 (DistributedDataParallel over an
// NCCL ProcessGroup, the buckets' all-reduce on the GPU), and the step time that
// bench/gpu/torch_cnn_step.py measures for PyTorch on the same GPU. Both sides: batch --batch of
// 1x28x28 images, cross entropy, SGD with momentum 0.9, lr 0.01, --warmup untimed and --steps
// timed steps, each step ended by a device synchronize; the median step is reported.
// Without a GPU (or with --device cpu) it runs on the CPU with Gloo, so it is testable anywhere.
//   cnn_step_worker [--device cuda|cpu] [--plain] [--steps 200] [--json FILE]
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "examples/fashion_mnist/model.h"
#include "runtime/ddp.h"
#include "runtime/process_group.h"

namespace cohort::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Zeroes each .grad in place, as PyTorch's Python side does; DDP's gradients are views of its
// buckets, which libtorch's C++ zero_grad() would detach or drop (see bench/ddp).
void ZeroGrad(const std::vector<at::Tensor>& params) {
  for (at::Tensor p : params) {
    at::Tensor& g = p.mutable_grad();
    if (!g.defined()) continue;
    if (g.grad_fn()) {
      g.detach_();
    } else {
      g.requires_grad_(false);
    }
    g.zero_();
  }
}

int Main(int argc, char** argv) {
  std::string device_name = "cuda";
  bool plain = false;
  int64_t batch = 64;
  int warmup = 20, steps = 200;
  std::string json_path;
  CLI::App app{"Fashion-MNIST CNN training steps on one device, with cohort's DDP at world 1"};
  app.add_option("--device", device_name)->check(CLI::IsMember({"cuda", "cpu"}));
  app.add_flag("--plain", plain, "no DistributedDataParallel: the model alone");
  app.add_option("--batch", batch);
  app.add_option("--warmup", warmup);
  app.add_option("--steps", steps);
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);

  const bool cuda = device_name == "cuda";
  if (cuda && !torch::cuda::is_available()) {
    fmt::print("cnn_step_worker: skipped: libtorch sees no CUDA device\n");
    return 0;
  }
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };

  torch::manual_seed(1234);
  auto cnn = examples::MakeFashionCnn();
  auto module = examples::AsModule(cnn);
  module->to(device);
  std::shared_ptr<runtime::ProcessGroup> pg;
  std::unique_ptr<runtime::DistributedDataParallel> ddp;
  if (!plain) {
    runtime::ProcessGroupOptions pgo;
    pgo.backend = cuda ? "nccl" : "gloo";
    pgo.devices = cuda ? collectives::DeviceType::kCUDA : collectives::DeviceType::kCPU;
    pg = runtime::ProcessGroup::FromEnv(pgo);
    ddp = std::make_unique<runtime::DistributedDataParallel>(module, pg);
  }
  const std::vector<at::Tensor> params = module->parameters();
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.01).momentum(0.9));
  const auto opts = torch::TensorOptions().device(device);
  const at::Tensor x = torch::randn({batch, 1, 28, 28}, opts);
  const at::Tensor y = torch::randint(0, 10, {batch}, opts.dtype(torch::kInt64));

  double first_loss = 0, last_loss = 0;
  std::vector<double> ms;
  for (int i = 0; i < warmup + steps; ++i) {
    const auto t0 = Clock::now();
    ZeroGrad(params);
    at::Tensor loss = torch::nn::functional::cross_entropy(examples::Forward(*cnn, x), y);
    loss.backward();
    opt.step();
    sync();
    if (i >= warmup)
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (i == 0) first_loss = loss.item<double>();
    if (i == warmup + steps - 1) last_loss = loss.item<double>();
  }
  // A DDP step must have left every gradient on the device, finite, and the loss must fall on a
  // fixed batch: the step did train.
  bool grads_ok = true;
  for (const auto& p : params) {
    grads_ok = grads_ok && p.grad().defined() && p.grad().device() == device &&
               torch::isfinite(p.grad()).all().item<bool>();
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const bool ok = grads_ok && std::isfinite(last_loss) && last_loss < first_loss;
  fmt::print(
      "cnn_step_worker: {} on {}{}: median step {:.3f} ms over {} steps (min {:.3f}), "
      "loss {:.4f} -> {:.4f}, gradients on the device and finite: {} -> {}\n",
      plain ? "plain" : "DDP world 1", device.str(),
      pg ? fmt::format(" ({} backend)", pg->Backend()) : "", median, steps, ms.front(), first_loss,
      last_loss, grads_ok ? "yes" : "NO", ok ? "OK" : "FAILED");
  if (!json_path.empty()) {
    std::ofstream(json_path) << nlohmann::json{
        {"side", "cohort"},
        {"ddp", !plain},
        {"device", device.str()},
        {"backend", pg ? pg->Backend() : "none"},
        {"median_step_ms", median},
        {"min_step_ms", ms.front()},
        {"first_loss", first_loss},
        {"last_loss", last_loss},
        {"ok", ok}}.dump(1);
  }
  return ok ? 0 : 2;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  try {
    return cohort::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "cnn_step_worker: {}\n", e.what());
    return 1;
  }
}
