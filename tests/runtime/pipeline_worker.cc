// One rank of a pipeline test run (started by pipeline_test, directly or under mpirun). Modes:
//   equiv     for each --configs entry (schedule:micro-batches:boundaries), trains a Sequential
//             as a pipeline over the world (or over the pp groups of --layout dp=2,pp=2, with DDP
//             over dp) for --steps SGD steps, and beside it the whole Sequential in this one
//             process on the whole (global) batch; checks parameters (by their global names) and
//             losses against it within --tol. One RESULT line per config; exit 1 when off.
//   kill      stage --victim SIGKILLs itself in the forward of micro-batch 1 of step 2; every
//             other stage must fail: prints "FAILED after <s> s: <error>" and exits 3.
//   mismatch  stage 1 gets an input it does not expect (--declared: it declares its input
//             shape, else torch's own shape error); prints the error and exits 3.
//   trainer   a Trainer whose step runs the pipeline (2 stages); stage 1 asks to stop after
//             --stop-at steps; prints each rank's losses and where it stopped.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <iostream>
#include <sstream>

#include "runtime/ddp.h"
#include "runtime/parallel_mesh.h"
#include "runtime/pipeline.h"
#include "runtime/process_group.h"
#include "runtime/trainer.h"

namespace {

using namespace cohort::runtime;

constexpr int64_t kIn = 16, kOut = 8, kBatch = 14;

torch::nn::Sequential MakeModel() {
  torch::manual_seed(4321);
  return torch::nn::Sequential(
      torch::nn::Linear(kIn, 24), torch::nn::Tanh(), torch::nn::Linear(24, 32), torch::nn::Tanh(),
      torch::nn::Linear(32, 16), torch::nn::Tanh(), torch::nn::Linear(16, 20), torch::nn::Tanh(),
      torch::nn::Linear(20, kOut));
}

// The batch of data-parallel replica r at step s.
std::pair<torch::Tensor, torch::Tensor> MakeBatch(int step, int r, int64_t rows = kBatch) {
  torch::manual_seed(1000 + 17 * step + r);
  return {torch::randn({rows, kIn}), torch::randn({rows, kOut})};
}

torch::Tensor Mse(const torch::Tensor& out, const torch::Tensor& y) {
  return torch::mse_loss(out, y);
}

struct Config {
  std::string text;
  PipelineSchedule schedule;
  int micro;
  std::vector<int> boundaries;  // empty: balanced
};

Config ParseConfig(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream ss(text);
  for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  if (parts.size() != 3) throw std::runtime_error("config must be schedule:micro:boundaries");
  Config c{text, ParsePipelineSchedule(parts[0]), std::stoi(parts[1]), {}};
  if (parts[2] != "bal") {
    std::stringstream bs(parts[2]);
    for (std::string b; std::getline(bs, b, ',');) c.boundaries.push_back(std::stoi(b));
  }
  return c;
}

// Trains one config; returns the failure text ("" when within tol).
std::string RunConfig(const Config& c, ParallelMesh& mesh, int steps, double tol) {
  const int dp = mesh.layout().dp, dp_rank = mesh.dp_rank();
  torch::nn::Sequential model = MakeModel();
  torch::nn::Sequential ref = MakeModel();
  PipelineOptions opts;
  opts.micro_batches = c.micro;
  opts.schedule = c.schedule;
  auto pipe = c.boundaries.empty()
                  ? Pipeline::Balanced(mesh.pp(), model.ptr(), opts)
                  : Pipeline::FromSequential(mesh.pp(), model.ptr(), c.boundaries, opts);
  std::shared_ptr<DistributedDataParallel> ddp;
  if (dp > 1) {
    ddp = std::make_shared<DistributedDataParallel>(pipe->module(), mesh.dp());
    pipe->SetDataParallel(ddp);
  }
  torch::optim::SGD opt(pipe->Parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::optim::SGD ref_opt(ref->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  double loss_diff = 0;
  for (int s = 0; s < steps; ++s) {
    auto [x, y] = MakeBatch(s, dp_rank);
    opt.zero_grad();
    const double loss = pipe->Step(x, y, Mse);
    opt.step();
    std::vector<torch::Tensor> xs, ys;
    for (int r = 0; r < dp; ++r) {
      auto [rx, ry] = MakeBatch(s, r);
      xs.push_back(rx);
      ys.push_back(ry);
    }
    ref_opt.zero_grad();
    auto ref_loss = Mse(ref->forward(torch::cat(xs)), torch::cat(ys));
    ref_loss.backward();
    ref_opt.step();
    // With dp > 1 each replica reports its own batch's loss.
    if (dp == 1) loss_diff = std::max(loss_diff, std::abs(loss - ref_loss.item<double>()));
  }
  double max_diff = 0;
  int compared = 0;
  auto ref_params = ref->named_parameters();
  for (const auto& [name, p] : pipe->NamedParameters()) {
    const auto* r = ref_params.find(name);
    if (!r) return "parameter " + name + " is not in the whole model";
    max_diff = std::max(max_diff, (p.detach() - r->detach()).abs().max().item<double>());
    ++compared;
  }
  const auto [first, end] = pipe->Layers();
  std::cout << fmt::format(
                   "RESULT rank={} config={} stage={} layers={}..{} params={} max_diff={:.3g} "
                   "loss_diff={:.3g} peak_in_flight={}",
                   mesh.world().Rank(), c.text, pipe->stage(), first, end, compared, max_diff,
                   loss_diff, pipe->Stats().peak_in_flight)
            << std::endl;
  std::string failure;
  if (!(max_diff <= tol)) failure += fmt::format(" parameters off by {}", max_diff);
  if (!(loss_diff <= tol)) failure += fmt::format(" loss off by {}", loss_diff);
  return failure;
}

int Equiv(const std::vector<std::string>& configs, const std::string& layout, int steps,
          double tol) {
  auto world = ProcessGroup::FromEnv();
  ParallelLayout l =
      layout.empty() ? ParallelLayout{1, world->Size(), 1} : ParallelLayout::Parse(layout);
  auto mesh = ParallelMesh::Create(world, l);
  std::string failures;
  for (const auto& text : configs) {
    const std::string f = RunConfig(ParseConfig(text), *mesh, steps, tol);
    if (!f.empty()) failures += " [" + text + "]" + f;
  }
  if (!failures.empty()) {
    std::cerr << "FAIL rank " << world->Rank() << ":" << failures << std::endl;
    return 1;
  }
  return 0;
}

// Stage module and forward of this rank for the kill and mismatch modes: one Linear per stage.
int Kill(int victim, int steps) {
  auto pp = ProcessGroup::FromEnv();
  const int stage = pp->Rank(), p = pp->Size();
  const int64_t in = stage == 0 ? kIn : 12, out = stage + 1 == p ? kOut : 12;
  auto layer = std::make_shared<torch::nn::LinearImpl>(in, out);
  int step = 0, calls = 0;
  auto forward = [&](const torch::Tensor& x) {
    if (stage == victim && step == 2 && calls++ == 1) std::raise(SIGKILL);
    return layer->forward(x);
  };
  PipelineOptions opts;
  opts.micro_batches = 4;
  Pipeline pipe(pp, layer, forward, opts);
  const auto begin = std::chrono::steady_clock::now();
  try {
    for (step = 0; step < steps; ++step) {
      auto [x, y] = MakeBatch(step, 0);
      pipe.Step(x, y, Mse);
      std::cout << "STEP " << step << std::endl;
    }
  } catch (const std::exception& e) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    std::cout << fmt::format("FAILED after {:.2f} s: {}", s, e.what()) << std::endl;
    return 3;
  }
  return 0;
}

int Mismatch(bool declared) {
  auto pp = ProcessGroup::FromEnv();
  const int stage = pp->Rank();
  // Stage 0 sends rows of 12; stage 1 is built for rows of 10.
  auto layer =
      std::make_shared<torch::nn::LinearImpl>(stage == 0 ? kIn : 10, stage == 0 ? 12 : kOut);
  PipelineOptions opts;
  opts.micro_batches = 2;
  if (declared && stage == 1) opts.input_row_shape = {10};
  Pipeline pipe(
      pp, layer, [&](const torch::Tensor& x) { return layer->forward(x); }, opts);
  try {
    auto [x, y] = MakeBatch(0, 0);
    pipe.Step(x, y, Mse);
  } catch (const std::exception& e) {
    std::cout << "FAILED: " << e.what() << std::endl;
    return 3;
  }
  return 0;
}

// The Trainer's pluggable step: losses reported per step must equal a one-process run's.
int TrainerMode(int steps, int stop_at) {
  auto pp = ProcessGroup::FromEnv();
  torch::nn::Sequential model = MakeModel();
  torch::nn::Sequential ref = MakeModel();
  PipelineOptions opts;
  opts.micro_batches = 3;
  auto pipe = Pipeline::Balanced(pp, model.ptr(), opts);
  auto opt = std::make_shared<torch::optim::SGD>(pipe->Parameters(), 0.1);
  torch::optim::SGD ref_opt(ref->parameters(), 0.1);
  constexpr size_t kExamples = 60;
  auto [data_x, data_y] = MakeBatch(99, 0, kExamples);
  TrainerOptions to;
  to.batch_size = 6;
  to.epochs = 100;
  to.max_steps = steps;
  to.progress_interval = 0;  // report every step
  to.data_rank = 0;          // both stages read the same batches
  to.data_ranks = 1;
  Trainer trainer(pp, nullptr, opt, to);
  std::vector<double> losses, ref_losses;
  Trainer::StepFn step = [&](const std::vector<size_t>& indices) {
    auto idx = torch::tensor(std::vector<int64_t>(indices.begin(), indices.end()));
    auto x = data_x.index_select(0, idx), y = data_y.index_select(0, idx);
    opt->zero_grad();
    const double loss = pipe->Step(x, y, Mse);
    opt->step();
    ref_opt.zero_grad();
    auto rl = Mse(ref->forward(x), y);
    rl.backward();
    ref_opt.step();
    losses.push_back(loss);
    ref_losses.push_back(rl.item<double>());
    return loss;
  };
  trainer.OnStep([&](const TrainerState& s) {
    if (pp->Rank() == 1 && s.step == stop_at) trainer.RequestStop();
  });
  const TrainResult r = trainer.Fit(kExamples, step);
  double diff = 0;
  for (size_t i = 0; i < losses.size(); ++i)
    diff = std::max(diff, std::abs(losses[i] - ref_losses[i]));
  std::cout << fmt::format(
                   "TRAINER rank={} steps={} last_loss={:.6f} max_loss_diff={:.3g} "
                   "losses={:.4f}",
                   pp->Rank(), r.steps, r.last_loss, diff, fmt::join(losses, ","))
            << std::endl;
  return diff <= 1e-5 && std::abs(r.last_loss - losses.back()) <= 1e-9 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pipeline test worker"};
  std::string mode = "equiv", layout;
  std::vector<std::string> configs;
  int steps = 3, victim = 1, stop_at = -1;
  double tol = 1e-5;
  bool declared = false;
  app.add_option("--mode", mode, "equiv, kill, mismatch or trainer");
  app.add_option("--configs", configs, "schedule:micro-batches:boundaries|bal");
  app.add_option("--layout", layout, "dp=2,pp=2 (default: pp = world)");
  app.add_option("--steps", steps);
  app.add_option("--tol", tol);
  app.add_option("--victim", victim, "kill: the stage that SIGKILLs itself");
  app.add_flag("--declared", declared, "mismatch: stage 1 declares its input shape");
  app.add_option("--stop-at", stop_at, "trainer: stage 1 asks to stop after this step");
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(1);
    if (mode == "equiv") return Equiv(configs, layout, steps, tol);
    if (mode == "kill") return Kill(victim, steps);
    if (mode == "mismatch") return Mismatch(declared);
    if (mode == "trainer") return TrainerMode(steps, stop_at);
    std::cerr << "unknown mode " << mode << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ERROR " << e.what() << std::endl;
    return 2;
  }
}
