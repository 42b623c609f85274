// A training program for the checkpoint tests, run under `cohort launch`: an MLP with dropout
// (so the RNG state matters) trained with Adam (so the optimizer state matters) by the Trainer on
// a synthetic dataset, with the Trainer's checkpoints configured from the env contract
// (COHORT_CHECKPOINT_URI, COHORT_CHECKPOINT_EVERY, COHORT_RESUME). Rank 0 writes the final
// parameters' bytes to --dump, for bitwise comparison between runs.
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include "runtime/checkpointing.h"
#include "runtime/mlflow_sink.h"
#include "runtime/ddp.h"
#include "runtime/process_group.h"
#include "runtime/trainer.h"

namespace {

using namespace cohort::runtime;

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(double dropout) : p(dropout) {
    fc1 = register_module("fc1", torch::nn::Linear(13, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 5));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::tanh(fc1(x));
    if (p > 0) h = torch::dropout(h, p, is_training());
    return fc2(h);
  }
  double p;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

Trainer* g_trainer = nullptr;
extern "C" void OnSigterm(int) {
  if (g_trainer) g_trainer->RequestStop();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint test trainer"};
  int64_t steps = 12, global_batch = 8, crash_at = -1;
  double dropout = 0.2;
  int slow_ms = 0, slow_rank = -1, slow_compute_ms = 0;
  std::string dump;
  app.add_option("--steps", steps, "total optimizer steps");
  app.add_option("--global-batch", global_batch, "examples per step over all ranks");
  app.add_option("--dropout", dropout);
  app.add_option("--dump", dump, "rank 0 writes the final parameters here");
  app.add_option("--crash-at", crash_at, "rank 1 of the first attempt SIGKILLs itself here");
  app.add_option("--slow-ms", slow_ms, "sleep per step (to be signalled mid-run)");
  app.add_option("--slow-rank", slow_rank,
                 "this rank computes --slow-compute-ms longer (a straggler)");
  app.add_option("--slow-compute-ms", slow_compute_ms,
                 "extra compute time per step of --slow-rank");
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(1);
    auto pg = ProcessGroup::FromEnv();
    if (global_batch % pg->Size() != 0) {
      throw cohort::InvalidArgument("--global-batch must be a multiple of the world size");
    }
    torch::manual_seed(42);
    const int64_t n = 600;
    auto inputs = torch::randn({n, 13});
    auto targets = torch::randn({n, 5});
    auto model = Mlp(dropout);
    auto ddp = std::make_shared<DistributedDataParallel>(model.ptr(), pg);
    auto opt =
        std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.01));
    TrainerOptions topts;
    topts.epochs = 1000;
    topts.max_steps = steps;
    topts.batch_size = static_cast<size_t>(global_batch / pg->Size());
    topts.seed = 7;
    topts.progress_interval = 0;
    Trainer trainer(pg, ddp, opt, topts);
    CheckpointConfig cfg;
    cfg.FillFromEnv();
    TrainingCheckpoints checkpoints(pg, model.ptr(), opt, cfg);
    const int64_t resumed = checkpoints.Resume(trainer);
    if (resumed >= 0) std::cout << "resumed from step " << resumed << std::endl;
    checkpoints.Attach(trainer);
    auto tracking = TrackTraining(trainer, *pg, {{"steps", std::to_string(steps)}});
    const bool first_attempt = std::getenv("COHORT_RESTART") == nullptr ||
                               std::string(std::getenv("COHORT_RESTART")) == "0";
    trainer.OnStep([&](const TrainerState& s) {
      std::cout << "step " << s.step << std::endl;
      if (s.step == crash_at && pg->Rank() == 1 && first_attempt) std::raise(SIGKILL);
      if (slow_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms));
    });
    g_trainer = &trainer;
    std::signal(SIGTERM, OnSigterm);
    trainer.Fit(static_cast<size_t>(n), [&](const std::vector<size_t>& idx) {
      auto index = torch::tensor(std::vector<int64_t>(idx.begin(), idx.end()));
      if (pg->Rank() == slow_rank) {
        std::this_thread::sleep_for(std::chrono::milliseconds(slow_compute_ms));
      }
      return torch::mse_loss(model->forward(inputs.index_select(0, index)),
                             targets.index_select(0, index));
    });
    // The end of training and a stop request both leave a snapshot of where we are.
    checkpoints.SaveNow(trainer.State());
    checkpoints.Finish();
    std::cout << "finished at step " << trainer.State().step << std::endl;
    if (tracking) tracking->Close(RunOutcome::kFinished);
    if (!dump.empty() && pg->Rank() == 0) {
      std::vector<torch::Tensor> parts;
      for (auto& p : model->parameters()) parts.push_back(p.detach().reshape({-1}));
      auto flat = torch::cat(parts).contiguous();
      std::ofstream out(dump, std::ios::binary);
      out.write(static_cast<const char*>(flat.data_ptr()), flat.numel() * sizeof(float));
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ERROR " << e.what() << std::endl;
    return 1;
  }
}
