// torchscript_train: trains a TorchScript model (scripted in Python by make_model.py) in C++ on
// one or many processes, then saves it back as TorchScript for serving or for Python.
//
//   torchscript_train                                   # one process
//   cohort launch --nproc-per-node 2 -- torchscript_train --out trained.pt
//
// The task is synthetic regression: y = sin(x . a) + 0.1 (x . b) for fixed a and b. Every rank
// draws its own batches; DistributedDataParallel averages the gradients, so the ranks keep one
// model. Each rank prints its loss on a fixed evaluation set before and after training and a
// checksum of its parameters (equal on every rank); rank 0 prints the training loss as it goes
// and saves the model.
#include <fmt/format.h>
#include <torch/optim/sgd.h>
#include <torch/script.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/ddp.h"
#include "runtime/process_group.h"

namespace {

using cohort::runtime::DistributedDataParallel;
using cohort::runtime::ProcessGroup;

struct Task {
  at::Tensor a, b;
  at::Tensor Target(const at::Tensor& x) const {
    return at::sin(at::matmul(x, a)) + 0.1 * at::matmul(x, b);
  }
};

at::Tensor Forward(torch::jit::Module& model, const at::Tensor& x) {
  return model.forward({x}).toTensor();
}

double EvalLoss(torch::jit::Module& model, const Task& task, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  return at::mse_loss(Forward(model, x), task.Target(x)).item<double>();
}

// Sum of every parameter, in double: equal on every rank while DDP keeps them in step.
double Checksum(torch::jit::Module& model) {
  double sum = 0;
  for (const at::Tensor& p : model.parameters()) sum += p.to(at::kDouble).sum().item<double>();
  return sum;
}

int Main(int argc, char** argv) {
  std::string model_path = COHORT_TORCHSCRIPT_MODEL;
  std::string out = "torchscript_trained.pt";
  int steps = 300, batch = 32, log_every = 50;
  double lr = 0.05;
  uint64_t seed = 0;
  CLI::App app{"Trains a TorchScript model with cohort's DistributedDataParallel"};
  app.add_option("--model", model_path, "TorchScript model to train")->capture_default_str();
  app.add_option("--out", out, "where rank 0 saves the trained model")->capture_default_str();
  app.add_option("--steps", steps, "optimizer steps")->capture_default_str();
  app.add_option("--batch", batch, "examples per rank per step")->capture_default_str();
  app.add_option("--lr", lr, "SGD learning rate (momentum 0.9)")->capture_default_str();
  app.add_option("--seed", seed, "seed of the task and of the data")->capture_default_str();
  app.add_option("--log-every", log_every, "print the loss every N steps")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto pg = ProcessGroup::FromEnv();
  const int rank = pg->Rank();
  if (!std::filesystem::is_regular_file(model_path)) {
    throw std::runtime_error(fmt::format(
        "no model at {}: pass --model PATH of a TorchScript file (make_model.py writes one)",
        model_path));
  }
  torch::jit::Module model = torch::jit::load(model_path);
  if (!model.hasattr("in_features")) {
    throw std::runtime_error(model_path +
                             " has no in_features attribute; script it with make_model.py");
  }
  const int64_t in = model.attr("in_features").toInt();
  model.train();

  // The task and the evaluation set are the same on every rank; the training data is not.
  torch::manual_seed(seed);
  const Task task{at::randn({in, 1}) / 4, at::randn({in, 1}) / 4};
  const at::Tensor eval_x = at::randn({512, in});

  // Broadcasts rank 0's parameters, then averages gradients in every backward.
  DistributedDataParallel ddp(model, pg);
  const double before = EvalLoss(model, task, eval_x);
  std::vector<at::Tensor> params;
  for (const at::Tensor& p : model.parameters()) params.push_back(p);
  torch::optim::SGD optimizer(params, torch::optim::SGDOptions(lr).momentum(0.9));

  torch::manual_seed(seed + 1 + static_cast<uint64_t>(rank));
  for (int step = 1; step <= steps; ++step) {
    const at::Tensor x = at::randn({batch, in});
    optimizer.zero_grad();
    at::Tensor loss = at::mse_loss(Forward(model, x), task.Target(x));
    loss.backward();
    optimizer.step();
    if (rank == 0 && (step % log_every == 0 || step == 1 || step == steps)) {
      std::printf("step %d/%d loss %.5f\n", step, steps, loss.item<double>());
      std::fflush(stdout);
    }
  }

  const double after = EvalLoss(model, task, eval_x);
  std::printf("rank %d eval loss before %.6f after %.6f checksum %.12e\n", rank, before, after,
              Checksum(model));
  std::fflush(stdout);
  if (rank == 0) {
    model.save(out);
    std::printf("saved %s\n", out.c_str());
    std::fflush(stdout);
  }
  pg->Barrier();  // nobody exits (and tears down the group) before rank 0 has saved
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const c10::Error& e) {
    // Without the C++ stack trace libtorch appends: one line for the user.
    std::fprintf(stderr, "torchscript_train: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torchscript_train: %s\n", e.what());
    return 1;
  }
}
