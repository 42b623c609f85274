// gpt: a small character-level transformer trained on Debian's fortunes with any layout of
// data-, pipeline- and tensor-parallel ranks (dp * pp * tp = the job's ranks):
//   cohort launch --nproc-per-node 4 -- gpt --pp 2 --tp 2
//   gpt                                  (one process: the same model, the same losses)
// Every rank of one replica (its pp x tp ranks) reads the same batches; replicas read disjoint
// shares (the Trainer's data rank is the dp rank). Rank 0 prints progress and the final loss.
// Snapshots are sharded (each rank saves the slices it holds) and resume at any other layout:
//   gpt --pp 2 --tp 2 --checkpoint-uri file:///tmp/ck ...   then   gpt --resume latest ...
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "common/error.h"
#include "common/log.h"
#include "examples/gpt/corpus.h"
#include "examples/gpt/model.h"
#include "runtime/checkpointing.h"
#include "runtime/ddp.h"
#include "runtime/mlflow_sink.h"
#include "runtime/parallel_mesh.h"
#include "runtime/pipeline.h"
#include "runtime/sharded_state.h"
#include "runtime/trainer.h"

namespace {

using namespace cohort;

struct Flags {
  examples::GptConfig model;
  int dp = 0;  // 0: the ranks left over by pp and tp
  int pp = 1;
  int tp = 1;
  std::string schedule = "1f1b";
  int micro_batches = 0;   // 0: 2 * pp
  size_t batch_size = 16;  // sequences per replica per step
  double lr = 3e-3;
  int epochs = 1;
  int64_t max_steps = 200;
  uint64_t seed = 0;
  double progress_interval = 1.0;
  std::string metrics;
  std::string data = examples::kFortunesDir;
  bool print_losses = false;
  runtime::CheckpointConfig checkpoint;  // flags, then COHORT_CHECKPOINT_* / COHORT_RESUME
  std::string config;                    // every flag as "name=value": the MLflow params
};

runtime::Trainer* g_trainer = nullptr;
volatile std::sig_atomic_t g_signal = 0;

void OnSignal(int sig) {
  g_signal = sig;
  std::signal(sig, SIG_DFL);
  if (g_trainer) g_trainer->RequestStop();
}

// Inputs and next-character targets [b, T] of the windows with these indices.
std::pair<at::Tensor, at::Tensor> Batch(const at::Tensor& text, const std::vector<size_t>& idx,
                                        int64_t context) {
  std::vector<at::Tensor> rows;
  for (size_t i : idx) {
    rows.push_back(text.slice(0, static_cast<int64_t>(i) * context,
                              static_cast<int64_t>(i) * context + context + 1));
  }
  const at::Tensor all = torch::stack(rows).to(torch::kLong);
  return {all.slice(1, 0, context), all.slice(1, 1, context + 1)};
}

runtime::ParallelLayout Layout(const Flags& f, int world) {
  runtime::ParallelLayout l;
  l.pp = f.pp;
  l.tp = f.tp;
  l.dp = f.dp > 0 ? f.dp : world / std::max(1, f.pp * f.tp);
  if (l.Ranks() != world) {
    throw InvalidArgument(fmt::format(
        "gpt: --dp {} x --pp {} x --tp {} = {} ranks, but the job has {}; make the product {}",
        l.dp, l.pp, l.tp, l.Ranks(), world, world));
  }
  return l;
}

int Run(const Flags& f) {
  at::set_num_threads(1);
  torch::manual_seed(f.seed);
  auto world = runtime::ProcessGroup::FromEnv();
  log::SetRank(world->Rank());
  const bool rank0 = world->Rank() == 0;
  const runtime::ParallelLayout layout = Layout(f, world->Size());
  auto mesh = runtime::ParallelMesh::Create(world, layout);

  const std::vector<uint8_t> chars = examples::LoadFortunes(f.data);
  const at::Tensor text = torch::from_blob(const_cast<uint8_t*>(chars.data()),
                                           {static_cast<int64_t>(chars.size())}, torch::kUInt8);
  const size_t windows = examples::WindowCount(chars.size(), f.model.context);

  const std::vector<int> cuts = examples::GptBoundaries(f.model, layout.pp);
  const int stage = mesh->pp_rank();
  const int first = stage == 0 ? 0 : cuts[stage - 1];
  const int end = stage + 1 < layout.pp ? cuts[stage] : f.model.Units();
  auto module = examples::MakeGptStage(f.model, mesh->tp(), first, end);

  runtime::PipelineOptions popts;
  popts.micro_batches = f.micro_batches > 0 ? f.micro_batches : 2 * layout.pp;
  popts.schedule = runtime::ParsePipelineSchedule(f.schedule);
  runtime::Pipeline pipe(
      mesh->pp(), module,
      [module](const at::Tensor& x) { return examples::GptStageForward(*module, x); }, popts);
  if (layout.dp > 1) {
    pipe.SetDataParallel(std::make_shared<runtime::DistributedDataParallel>(module, mesh->dp()));
  }
  auto optimizer =
      std::make_shared<torch::optim::Adam>(module->parameters(), torch::optim::AdamOptions(f.lr));

  runtime::TrainerOptions options;
  options.epochs = f.epochs;
  options.batch_size = f.batch_size;
  options.seed = f.seed;
  options.max_steps = f.max_steps;
  options.metrics_path = f.metrics;
  options.progress_interval = f.progress_interval;
  options.data_rank = mesh->dp_rank();
  options.data_ranks = layout.dp;
  runtime::Trainer trainer(world, nullptr, optimizer, options);
  runtime::CheckpointConfig checkpoint_config = f.checkpoint;
  checkpoint_config.FillFromEnv();
  runtime::ShardedCheckpointLayout sharded{{layout.dp, layout.pp, layout.tp},
                                           runtime::TensorParallelParamShardings(*module),
                                           mesh->dp_rank() == 0};
  runtime::TrainingCheckpoints checkpoints(world, module, optimizer, checkpoint_config, sharded);
  const int64_t resumed = checkpoints.Resume(trainer);
  checkpoints.Attach(trainer);
  if (rank0 && resumed >= 0) {
    std::printf("resumed from step %lld\n", static_cast<long long>(resumed));
  }
  auto config = runtime::ParamsFromConfig(f.config);
  config.emplace_back("layout", layout.ToString());
  auto tracking = runtime::TrackTraining(trainer, *world, std::move(config));
  if (rank0) {
    std::printf(
        "gpt: %zu characters, %zu windows of %lld; layout %s, %d micro-batches (%s), "
        "batch %zu per replica, %d units (%lld blocks of dim %lld)\n",
        chars.size(), windows, static_cast<long long>(f.model.context), layout.ToString().c_str(),
        popts.micro_batches, f.schedule.c_str(), f.batch_size, f.model.Units(),
        static_cast<long long>(f.model.layers), static_cast<long long>(f.model.dim));
    std::fflush(stdout);
  }
  g_trainer = &trainer;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  auto ce = [](const at::Tensor& logits, const at::Tensor& target) {
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                target.reshape({-1}));
  };
  const auto fit = [&](const std::vector<size_t>& idx) {
    auto [input, target] = Batch(text, idx, f.model.context);
    optimizer->zero_grad();
    double loss = pipe.Step(input, target, ce);
    optimizer->step();
    if (layout.dp > 1) {
      mesh->dp()
          ->comm()
          .AllReduce(collectives::TensorView(&loss, 1, collectives::DType::kFloat64),
                     collectives::ReduceOp::kAvg)
          ->Wait();
    }
    if (f.print_losses && rank0) {
      std::printf("step %lld loss %.9g\n", static_cast<long long>(trainer.State().step + 1), loss);
    }
    return loss;
  };
  runtime::TrainResult result;
  try {
    result = trainer.Fit(windows, runtime::Trainer::StepFn(fit));
    g_trainer = nullptr;
    // Stopped or done: a snapshot of where training stands (when checkpoints are on).
    checkpoints.SaveNow(trainer.State());
    checkpoints.Finish();
  } catch (const std::exception& e) {
    if (tracking) tracking->Close(runtime::RunOutcome::kFailed, e.what());
    throw;
  }
  if (tracking) {
    tracking->Close(g_signal != 0 ? runtime::RunOutcome::kKilled : runtime::RunOutcome::kFinished);
  }
  if (rank0) {
    std::printf("trained %lld steps in %.1f s (%.0f sequences/s), final loss %.4f\n",
                static_cast<long long>(result.steps), result.seconds, result.samples_per_second,
                result.last_loss);
    std::fflush(stdout);
  }
  return g_signal != 0 ? 128 + g_signal : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{
      "Trains a small character-level transformer on Debian's fortunes.\n"
      "  cohort launch --nproc-per-node 4 -- gpt --pp 2 --tp 2"};
  // A flag given twice takes its last value (a script's arguments override its defaults).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--dp", f.dp, "data-parallel replicas (default: the ranks left by pp and tp)");
  app.add_option("--pp", f.pp, "pipeline stages")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--tp", f.tp, "tensor-parallel ranks per stage")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--schedule", f.schedule, "pipeline schedule: gpipe or 1f1b")
      ->capture_default_str()
      ->check(CLI::IsMember({"gpipe", "1f1b"}));
  app.add_option("--micro-batches", f.micro_batches, "micro-batches per step (default 2 x pp)");
  app.add_option("--batch-size", f.batch_size, "sequences per replica per step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", f.lr, "Adam's learning rate")->capture_default_str();
  app.add_option("--epochs", f.epochs, "passes over the corpus")->capture_default_str();
  app.add_option("--max-steps", f.max_steps, "stop after this many steps (-1: no limit)")
      ->capture_default_str();
  app.add_option("--seed", f.seed, "initialisation and shuffling")->capture_default_str();
  app.add_option("--progress-interval", f.progress_interval, "seconds between progress lines")
      ->capture_default_str();
  app.add_option("--metrics", f.metrics, "JSON-lines metrics file (rank 0)");
  app.add_option("--data", f.data, "folder of fortune files")->capture_default_str();
  app.add_option("--layers", f.model.layers, "transformer blocks")->capture_default_str();
  app.add_option("--dim", f.model.dim, "model width")->capture_default_str();
  app.add_option("--heads", f.model.heads, "attention heads")->capture_default_str();
  app.add_option("--context", f.model.context, "characters per sequence")->capture_default_str();
  app.add_option("--checkpoint-uri", f.checkpoint.uri,
                 "save sharded snapshots here: file:///dir, s3://bucket/prefix (default: "
                 "COHORT_CHECKPOINT_URI, which cohort launch --checkpoint-uri sets)");
  app.add_option("--checkpoint-every", f.checkpoint.every,
                 "steps between snapshots (0: only at the end and when stopped)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--resume", f.checkpoint.resume,
                 "latest, or a snapshot URI, saved at any layout (default: COHORT_RESUME)");
  app.add_flag("--print-losses", f.print_losses, "print every step's loss (rank 0)");
  CLI11_PARSE(app, argc, argv);
  f.config = app.config_to_str(/*default_also=*/true, /*write_description=*/false);
  try {
    return Run(f);
  } catch (const cohort::InvalidArgument& e) {
    std::fprintf(stderr, "gpt: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpt: %s\n", e.what());
    return 1;
  }
}
