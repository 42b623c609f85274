// fashion_mnist: the main job. A small CNN trained data-parallel on Fashion-MNIST with cohort's
// runtime, then evaluated on the 10k test images:
//   cohort launch --nproc-per-node 4 -- fashion_mnist --epochs 2
//   mpirun -np 4 fashion_mnist --epochs 2
//   fashion_mnist --epochs 1            (one process)
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "examples/fashion_mnist/idx.h"
#include "examples/fashion_mnist/model.h"
#include "runtime/checkpointing.h"
#include "runtime/ddp.h"
#include "runtime/mlflow_sink.h"
#include "runtime/process_group.h"
#include "runtime/prometheus_sink.h"
#include "runtime/trainer.h"
#include "serving/register_model.h"

namespace {

using cohort::examples::FashionMnistSplit;

// Fashion-MNIST's pixel mean and standard deviation (over the training set, scaled to [0, 1]).
constexpr double kMean = 0.2860;
constexpr double kStd = 0.3530;
// Images per forward pass in the evaluation (no gradients: larger than a training batch).
constexpr int64_t kEvalBatch = 256;

struct Flags {
  int epochs = 2;
  size_t batch_size = 64;
  double lr = 2e-3;
  std::string optimizer = "adam";
  std::string data = cohort::examples::kFashionMnistDir;
  std::string metrics;
  int64_t max_steps = -1;
  uint64_t seed = 0;
  int threads = 1;
  double progress_interval = 1.0;
  std::string ps_mode = "sync";  // async: the parameter servers run the optimizer
  int staleness = -1;            // ps async: SSP's bound; -1: ASP
  bool ps_pipeline = false;      // ps async: each push overlaps the next step
  int slow_rank = -1;            // tests: this rank sleeps slow_ms per step
  int slow_ms = 0;
  cohort::runtime::CheckpointConfig checkpoint;  // flags, then COHORT_CHECKPOINT_* / COHORT_RESUME
  std::string config;          // every flag as "name=value" lines: the MLflow run's params
  std::string register_name;   // --register, else COHORT_REGISTER: register the trained model
  std::string model_repo;      // --model-repo, else COHORT_MODEL_REPO: its Triton repository
  std::string skeleton;        // TorchScript skeleton (default: skeletons/ next to this program)
  bool katib_metrics = false;  // the final metrics as name=value lines (Katib's StdOut collector)
};

// Rank 0, at the end: exports the model into flags.model_repo as a new version and registers it
// (with MLflow, under the tracking run, when MLFLOW_TRACKING_URI is set).
void RegisterModel(const Flags& flags, const torch::nn::Module& module, double accuracy,
                   cohort::runtime::MlflowSink* tracking) {
  cohort::serving::RegisterOptions o;
  o.name = flags.register_name;
  o.repo_uri = flags.model_repo;
  o.skeleton_path = flags.skeleton;
  o.tags = {{"test_accuracy", fmt::format("{:.4f}", accuracy)}};
  if (tracking) o.run_id = tracking->run_id();
  const cohort::serving::PublishResult r = cohort::serving::RegisterTrainedModel(module, o);
  std::printf("%s\n", r.Summary().c_str());
  std::fflush(stdout);
}

// The dataset as tensors: images stay uint8 (47 MB rather than 188 MB of floats per worker) and
// are converted batch by batch.
struct Data {
  at::Tensor images;  // uint8 [N, 1, 28, 28]
  at::Tensor labels;  // int64 [N]
};

Data ToTensors(FashionMnistSplit split) {
  auto n = static_cast<int64_t>(split.count);
  auto rows = static_cast<int64_t>(split.rows), cols = static_cast<int64_t>(split.cols);
  Data d;
  d.images = torch::from_blob(split.images.data(), {n, 1, rows, cols}, torch::kUInt8).clone();
  d.labels = torch::from_blob(split.labels.data(), {n}, torch::kUInt8).to(torch::kLong);
  return d;
}

at::Tensor Normalise(const at::Tensor& images) {
  return images.to(torch::kFloat).div_(255.0).sub_(kMean).div_(kStd);
}

at::Tensor IndexTensor(const std::vector<size_t>& indices) {
  std::vector<int64_t> v(indices.begin(), indices.end());
  return torch::tensor(v, torch::kLong);
}

// One thread per worker unless told otherwise: several workers share the cores. OpenBLAS (which
// Debian's libtorch computes convolutions with) keeps its own pool, sized at load time from
// OPENBLAS_NUM_THREADS; set it directly, since that variable was read before main().
void SetThreads(int threads) {
  at::set_num_threads(threads);
  using SetFn = void (*)(int);
  if (auto set = reinterpret_cast<SetFn>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(threads);
  }
}

// Counts correct predictions on this rank's share of the test set (every world-th image from
// rank), then sums the counts over ranks.
std::pair<int64_t, int64_t> Evaluate(cohort::examples::FashionCnn& model, const Data& test,
                                     cohort::runtime::ProcessGroup& pg) {
  torch::NoGradGuard no_grad;
  const at::Tensor mine = torch::arange(pg.Rank(), test.images.size(0), pg.Size(), torch::kLong);
  int64_t counts[2] = {0, mine.size(0)};
  for (int64_t at = 0; at < mine.size(0); at += kEvalBatch) {
    const at::Tensor idx = mine.slice(0, at, std::min<int64_t>(at + kEvalBatch, mine.size(0)));
    const at::Tensor logits =
        cohort::examples::Forward(model, Normalise(test.images.index_select(0, idx)));
    counts[0] += logits.argmax(1).eq(test.labels.index_select(0, idx)).sum().item<int64_t>();
  }
  if (pg.Size() > 1) {
    pg.comm()
        .AllReduce(cohort::collectives::TensorView(counts, 2, cohort::collectives::DType::kInt64),
                   cohort::collectives::ReduceOp::kSum)
        ->Wait();
  }
  return {counts[0], counts[1]};
}

// The first SIGTERM/SIGINT (the launcher stopping the group, Ctrl-C) asks the loop to stop after
// a step every rank agrees on; a second one kills as usual.
cohort::runtime::Trainer* g_trainer = nullptr;
volatile std::sig_atomic_t g_signal = 0;

void OnSignal(int sig) {
  g_signal = sig;
  std::signal(sig, SIG_DFL);
  if (g_trainer) g_trainer->RequestStop();
}

int TrainAndEvaluate(const Flags& flags, cohort::runtime::ProcessGroup& pg,
                     cohort::runtime::Trainer& trainer,
                     cohort::runtime::TrainingCheckpoints& checkpoints,
                     cohort::examples::FashionCnn& model, torch::nn::Module& module,
                     const Data& train, const Data& test, cohort::runtime::MlflowSink* tracking);

int Run(const Flags& flags) {
  SetThreads(flags.threads);
  torch::manual_seed(flags.seed);

  auto pg = cohort::runtime::ProcessGroup::FromEnv();
  cohort::log::SetRank(pg->Rank());
  const bool rank0 = pg->Rank() == 0;

  const Data train = ToTensors(cohort::examples::LoadFashionMnist(flags.data, "train"));
  const Data test = ToTensors(cohort::examples::LoadFashionMnist(flags.data, "t10k"));

  auto model = cohort::examples::MakeFashionCnn();
  auto module = cohort::examples::AsModule(model);
  // ps async: the servers hold the parameters; nothing to all-reduce.
  auto ddp = flags.ps_mode == "async"
                 ? nullptr
                 : std::make_shared<cohort::runtime::DistributedDataParallel>(module, pg);
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  if (flags.optimizer == "adam") {
    optimizer = std::make_shared<torch::optim::Adam>(module->parameters(),
                                                     torch::optim::AdamOptions(flags.lr));
  } else {
    optimizer = std::make_shared<torch::optim::SGD>(
        module->parameters(), torch::optim::SGDOptions(flags.lr).momentum(0.9));
  }

  cohort::runtime::TrainerOptions options;
  options.epochs = flags.epochs;
  options.batch_size = flags.batch_size;
  options.seed = flags.seed;
  options.max_steps = flags.max_steps;
  options.metrics_path = flags.metrics;
  options.progress_interval = flags.progress_interval;
  options.ps_mode = flags.ps_mode;
  options.staleness = flags.staleness;
  options.ps_pipeline = flags.ps_pipeline;
  cohort::runtime::Trainer trainer(pg, ddp, optimizer, options);
  cohort::runtime::CheckpointConfig checkpoint_config = flags.checkpoint;
  checkpoint_config.FillFromEnv();
  cohort::runtime::TrainingCheckpoints checkpoints(pg, module, optimizer, checkpoint_config);
  const int64_t resumed = checkpoints.Resume(trainer);
  checkpoints.Attach(trainer);
  if (rank0 && resumed >= 0) {
    std::printf("resumed from step %lld\n", static_cast<long long>(resumed));
  }
  // After Resume: a restarted job continues the MLflow run its snapshot recorded.
  auto tracking =
      cohort::runtime::TrackTraining(trainer, *pg, cohort::runtime::ParamsFromConfig(flags.config));
  // COHORT_METRICS_PORT set: every worker serves Prometheus /metrics (port + local rank).
  const auto prometheus = cohort::runtime::ServeMetrics(trainer, ddp);

  if (rank0) {
    std::string ps;
    if (flags.ps_mode == "async") {
      ps = flags.staleness < 0 ? ", ps async ASP"
                               : fmt::format(", ps async SSP {}", flags.staleness);
      if (flags.ps_pipeline && flags.staleness != 0) ps += " pipelined";
    }
    std::printf(
        "fashion_mnist: %lld training images on %d worker(s) (%s%s), batch %zu per worker, "
        "%s lr %g\n",
        static_cast<long long>(train.images.size(0)), pg->Size(), pg->Backend(), ps.c_str(),
        flags.batch_size, flags.optimizer.c_str(), flags.lr);
    std::fflush(stdout);
  }
  g_trainer = &trainer;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);

  module->train();
  try {
    return TrainAndEvaluate(flags, *pg, trainer, checkpoints, *model, *module, train, test,
                            tracking.get());
  } catch (const std::exception& e) {
    if (tracking) tracking->Close(cohort::runtime::RunOutcome::kFailed, e.what());
    throw;
  }
}

// Trains, saves the last snapshot, evaluates and reports; closes the tracking run (when there
// is one) as FINISHED or, after a signal, KILLED.
int TrainAndEvaluate(const Flags& flags, cohort::runtime::ProcessGroup& pg,
                     cohort::runtime::Trainer& trainer,
                     cohort::runtime::TrainingCheckpoints& checkpoints,
                     cohort::examples::FashionCnn& model, torch::nn::Module& module,
                     const Data& train, const Data& test, cohort::runtime::MlflowSink* tracking) {
  const bool rank0 = pg.Rank() == 0;
  const cohort::runtime::TrainResult result =
      trainer.Fit(static_cast<size_t>(train.images.size(0)), [&](const std::vector<size_t>& batch) {
        if (pg.Rank() == flags.slow_rank) {
          std::this_thread::sleep_for(std::chrono::milliseconds(flags.slow_ms));
        }
        const at::Tensor idx = IndexTensor(batch);
        const at::Tensor logits =
            cohort::examples::Forward(model, Normalise(train.images.index_select(0, idx)));
        return torch::nn::functional::cross_entropy(logits, train.labels.index_select(0, idx));
      });
  g_trainer = nullptr;
  // Stopped or done: a snapshot of where training stands (when checkpoints are on).
  checkpoints.SaveNow(trainer.State());
  checkpoints.Finish();
  if (g_signal != 0) {
    if (rank0) {
      std::printf("stopped by signal %d after step %lld\n", static_cast<int>(g_signal),
                  static_cast<long long>(trainer.State().step));
    }
    if (tracking) tracking->Close(cohort::runtime::RunOutcome::kKilled);
    return 128 + g_signal;
  }

  module.eval();
  const auto [correct, total] = Evaluate(model, test, pg);
  const double accuracy =
      total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
  if (!flags.register_name.empty() && pg.Rank() == 0) {
    RegisterModel(flags, module, accuracy, tracking);
  }
  if (tracking) {
    tracking->LogMetric("test_accuracy", accuracy, trainer.State().step);
    tracking->Close(cohort::runtime::RunOutcome::kFinished);
  }
  if (rank0) {
    std::printf("trained %lld steps in %.1f s (%.0f samples/s), final loss %.4f\n",
                static_cast<long long>(result.steps), result.seconds, result.samples_per_second,
                result.last_loss);
    std::printf("test accuracy: %.2f%% (%lld/%lld)\n", 100.0 * accuracy,
                static_cast<long long>(correct), static_cast<long long>(total));
    if (flags.katib_metrics) {  // Katib's StdOut metrics collector reads name=value lines
      std::printf("loss=%.6g\ntest_accuracy=%.6g\nsamples_per_second=%.6g\nsteps=%lld\n",
                  result.last_loss, accuracy, result.samples_per_second,
                  static_cast<long long>(result.steps));
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{
      "Trains a small CNN on Fashion-MNIST, data-parallel over the workers of a job.\n"
      "  cohort launch --nproc-per-node 4 -- fashion_mnist --epochs 2"};
  // A flag given twice takes its last value, so scripts/demo's arguments override its defaults.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--epochs", flags.epochs, "passes over the training set")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--batch-size", flags.batch_size, "examples per worker per step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", flags.lr, "learning rate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--optimizer", flags.optimizer, "adam, or sgd (with momentum 0.9)")
      ->capture_default_str()
      ->check(CLI::IsMember({"adam", "sgd"}));
  app.add_option("--data", flags.data,
                 "folder with Fashion-MNIST's *-idx?-ubyte.gz (Debian's dataset-fashion-mnist)")
      ->capture_default_str();
  app.add_option("--metrics", flags.metrics, "write metrics as JSON lines to this file (rank 0)");
  app.add_option("--max-steps", flags.max_steps, "stop after this many steps (-1: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{-1}, std::numeric_limits<int64_t>::max()));
  app.add_option("--seed", flags.seed, "model initialisation and shuffling")->capture_default_str();
  app.add_option("--threads", flags.threads, "torch threads per worker")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--progress-interval", flags.progress_interval,
                 "seconds between progress lines and metrics records (0: every step)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ps-mode", flags.ps_mode,
                 "sync: gradients all-reduced over the backend; async: the parameter servers "
                 "(COHORT_PS_SERVERS, cohort launch --ps-servers N) hold the parameters and run "
                 "the optimizer")
      ->capture_default_str()
      ->check(CLI::IsMember({"sync", "async"}));
  app.add_option("--staleness", flags.staleness,
                 "ps async: a worker runs at most this many steps ahead of the slowest (SSP; 0: "
                 "BSP); -1: no bound (ASP)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1000000));
  app.add_flag("--ps-pipeline", flags.ps_pipeline,
               "ps async: each push overlaps the next step's forward and backward, which then "
               "uses the parameters one push older (the staleness bound still holds; not with "
               "--staleness 0)");
  app.add_option("--slow-rank", flags.slow_rank, "tests: this rank sleeps --slow-ms every step")
      ->capture_default_str();
  app.add_option("--slow-ms", flags.slow_ms, "tests: milliseconds --slow-rank sleeps per step")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--checkpoint-uri", flags.checkpoint.uri,
                 "save snapshots here: file:///dir, s3://bucket/prefix (default: "
                 "COHORT_CHECKPOINT_URI, which cohort launch --checkpoint-uri sets)");
  app.add_option("--checkpoint-every", flags.checkpoint.every,
                 "steps between snapshots (0: only at the end and when stopped)")
      ->check(CLI::NonNegativeNumber);
  app.add_option(
      "--resume", flags.checkpoint.resume,
      "latest, or a snapshot URI (default: COHORT_RESUME; a restarted group gets latest)");
  app.add_flag("--katib-metrics", flags.katib_metrics,
               "at the end print loss, test_accuracy, samples_per_second and steps as name=value "
               "lines (Katib's StdOut metrics collector)");
  app.add_option("--register", flags.register_name,
                 "at the end, export the model and register it under this name (default: "
                 "COHORT_REGISTER); needs --model-repo");
  app.add_option("--model-repo", flags.model_repo,
                 "Triton model repository for --register: file:///dir or s3://bucket/prefix "
                 "(default: COHORT_MODEL_REPO)");
  app.add_option("--skeleton", flags.skeleton,
                 "the model's TorchScript skeleton (default: skeletons/fashion_cnn.pt next to "
                 "this program)");
  CLI11_PARSE(app, argc, argv);
  if (flags.register_name.empty()) flags.register_name = cohort::env::kRegister.Str("");
  if (flags.model_repo.empty()) flags.model_repo = cohort::env::kModelRepo.Str("");
  if (flags.skeleton.empty()) {
    flags.skeleton = (std::filesystem::canonical("/proc/self/exe").parent_path() / "skeletons" /
                      "fashion_cnn.pt")
                         .string();
  }
  if (!flags.register_name.empty() && flags.model_repo.empty()) {
    std::fprintf(stderr,
                 "fashion_mnist: --register %s needs a repository: pass --model-repo URI (or set "
                 "COHORT_MODEL_REPO)\n",
                 flags.register_name.c_str());
    return 2;
  }
  if (flags.ps_pipeline && flags.ps_mode != "async") {
    std::fprintf(stderr,
                 "fashion_mnist: --ps-pipeline overlaps the parameter servers' asynchronous "
                 "pushes with the next step; add --ps-mode async (or drop --ps-pipeline)\n");
    return 2;
  }
  if (flags.ps_pipeline && flags.staleness == 0) {
    std::fprintf(stderr,
                 "fashion_mnist: --ps-pipeline with --staleness 0: BSP makes every step wait for "
                 "the previous push's answer, so nothing can overlap; pass --staleness 1 or more, "
                 "or drop --ps-pipeline\n");
    return 2;
  }
  if (flags.staleness >= 0 && flags.ps_mode != "async") {
    std::fprintf(stderr,
                 "fashion_mnist: --staleness %d bounds the parameter servers' asynchronous mode; "
                 "add --ps-mode async (or drop --staleness)\n",
                 flags.staleness);
    return 2;
  }
  flags.config = app.config_to_str(/*default_also=*/true, /*write_description=*/false);

  try {
    return Run(flags);
  } catch (const cohort::InvalidArgument& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
    return 1;
  }
}
