// The cohort side of bench/ddp/ddp_bench.py (issue 4's DDP benchmark); bench/ddp/
// torch_ddp_worker.py is its PyTorch twin and must stay step for step the same.
//
// Each rank builds the model (cnn: the Fashion-MNIST CNN; mlp: 784-2048-2048-2048-10, ~10M
// parameters, so that communication matters) from a fixed seed, wraps it in
// DistributedDataParallel over ProcessGroup::FromEnv(), makes --batches synthetic batches once
// (fixed seed + rank: no data loading is measured), and trains with SGD for --warmup untimed and
// --steps timed steps. The timed region is the training steps only, between a barrier and this
// rank's last optimizer step; the job's time is the slowest rank's. Per step it also times the
// phases (forward+loss, backward including DDP's wait for the buckets, optimizer), and reads the
// overlap from DistributedDataParallel::Stats().
//
// After the timed steps every rank hashes its parameters' bytes (XXH3) and the hashes are
// all-gathered through the ProcessGroup: ranks that differ make every rank exit 2 with the
// largest difference from rank 0 named. Rank 0 writes the result to --out (JSON).
//
//   cohort launch --nproc-per-node 2 -- build/bin/ddp_bench_worker --model mlp --out r.json
#include <fmt/format.h>
#include <time.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>
#include <xxhash.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/ddp.h"
#include "runtime/process_group.h"
#include "runtime/ps_async.h"

namespace cohort::bench {
namespace {

using runtime::DistributedDataParallel;
using runtime::ProcessGroup;
using Clock = std::chrono::steady_clock;
namespace nn = torch::nn;

struct Options {
  std::string model = "cnn";
  int64_t batch = 64;
  int warmup = 5;
  int steps = 30;
  int batches = 4;  // distinct synthetic batches per rank, cycled
  int64_t seed = 1234;
  double lr = 0.01;
  double momentum = 0.9;
  bool plain = false;       // no DDP: the local training floor (world 1 only)
  bool ps_async = false;    // no DDP: the parameter servers run SGD (runtime/ps_async.h, ASP)
  bool ps_pipeline = false;  // ps_async: each push overlaps the next step
  int perturb_rank = -1;    // to see the check fail: this rank nudges a parameter before it
  runtime::DdpOptions ddp;  // bucket sizes
  std::string out;
};

// The same layers, in the same order, as torch_ddp_worker.py's nn.Sequential: parameter order
// decides DDP's buckets, and the order InitParams draws the initial values in.
nn::Sequential MakeModel(const std::string& name) {
  if (name == "cnn") {
    return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1)), nn::ReLU(),
                          nn::MaxPool2d(nn::MaxPool2dOptions(2)),
                          nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)), nn::ReLU(),
                          nn::MaxPool2d(nn::MaxPool2dOptions(2)), nn::Flatten(),
                          nn::Linear(32 * 7 * 7, 128), nn::ReLU(), nn::Linear(128, 10));
  }
  if (name == "mlp") {
    return nn::Sequential(nn::Linear(784, 2048), nn::ReLU(), nn::Linear(2048, 2048), nn::ReLU(),
                          nn::Linear(2048, 2048), nn::ReLU(), nn::Linear(2048, 10));
  }
  throw InvalidArgument(fmt::format("unknown --model '{}'; use cnn or mlp", name));
}

// PyTorch's default init (kaiming_uniform_ with a = sqrt(5) for weights, the same bound for
// biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))), drawn explicitly in parameter order so that both
// sides start from bitwise the same values (the modules' own init draws differ between libtorch
// and Python). Every layer here has a weight followed by its bias.
void InitParams(const std::vector<at::Tensor>& params, int64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (size_t i = 0; i + 1 < params.size(); i += 2) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(params[i][0].numel()));
    at::Tensor w = params[i];
    at::Tensor b = params[i + 1];
    w.uniform_(-bound, bound);
    b.uniform_(-bound, bound);
  }
}

std::vector<int64_t> InputShape(const std::string& model, int64_t batch) {
  if (model == "cnn") return {batch, 1, 28, 28};
  return {batch, 784};
}

// XXH3 of every parameter's bytes, in parameter order: equal only if bitwise equal.
uint64_t HashParams(const std::vector<at::Tensor>& params) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (const auto& p : params) {
    const at::Tensor c = p.detach().contiguous();
    XXH3_64bits_update(state, c.data_ptr(), c.numel() * c.element_size());
  }
  const uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return h;
}

at::Tensor Flat(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> parts;
  for (const auto& p : params) parts.push_back(p.detach().reshape({-1}));
  return torch::cat(parts);
}

// What PyTorch's Python Optimizer.zero_grad() does (the PyTorch side calls it): zero each .grad
// in place. libtorch 1.13's C++ Optimizer::zero_grad() calls .grad.detach_() first, which throws
// "Can't detach views in-place" once DDP has made the gradients views of its buckets.
void ZeroGrad(const std::vector<at::Tensor>& params) {
  for (at::Tensor p : params) {  // a handle: the same tensor
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

// CPU time of the whole process (every thread: autograd, communication, store client).
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Sums (or maxes) a few doubles over the ranks.
std::vector<double> Reduce(ProcessGroup& pg, std::vector<double> v, collectives::ReduceOp op) {
  at::Tensor t = torch::tensor(v, torch::kFloat64);
  pg.AllReduce(t, op)->Wait();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

std::string Hex(uint64_t h) { return fmt::format("{:016x}", h); }

// Every rank compares every rank's hash; on a mismatch all ranks join one broadcast of rank 0's
// parameters to name the largest difference, and all return false.
bool ParamsIdentical(ProcessGroup& pg, const std::vector<at::Tensor>& params, int steps,
                     nlohmann::json* out) {
  const uint64_t mine = HashParams(params);
  at::Tensor in = torch::empty({1}, torch::kInt64);
  *in.data_ptr<int64_t>() = static_cast<int64_t>(mine);
  at::Tensor all = torch::empty({pg.Size()}, torch::kInt64);
  pg.AllGather(in, all)->Wait();
  std::vector<std::string> hashes;
  bool same = true;
  for (int r = 0; r < pg.Size(); ++r) {
    const auto h = static_cast<uint64_t>(all.data_ptr<int64_t>()[r]);
    hashes.push_back(Hex(h));
    same = same && h == mine;
  }
  const bool any_differs = Reduce(pg, {same ? 0.0 : 1.0}, collectives::ReduceOp::kMax)[0] > 0;
  (*out)["param_hashes"] = hashes;
  (*out)["params_identical"] = !any_differs;
  if (!any_differs) return true;
  at::Tensor mine_flat = Flat(params);
  at::Tensor root = mine_flat.clone();
  pg.Broadcast(root, 0)->Wait();
  const double diff = (mine_flat - root).abs().max().item<double>();
  const double worst = Reduce(pg, {diff}, collectives::ReduceOp::kMax)[0];
  std::fprintf(stderr,
               "ddp_bench_worker: FAILED: parameters differ across ranks after %d steps: hashes "
               "[%s]; this rank's largest |difference| from rank 0 is %g, the worst rank's %g\n",
               steps, fmt::format("{}", fmt::join(hashes, ", ")).c_str(), diff, worst);
  return false;
}

int Run(const Options& o) {
  torch::set_num_threads(1);  // as the PyTorch side; Debian's default is 1 anyway
  std::shared_ptr<ProcessGroup> pg = ProcessGroup::FromEnv();
  const int rank = pg->Rank();
  const int world = pg->Size();
  if (o.plain && world != 1) {
    throw InvalidArgument(fmt::format(
        "--plain (no DDP) runs at world size 1, not {}; drop --plain or start one worker", world));
  }

  nn::Sequential model = MakeModel(o.model);
  const std::vector<at::Tensor> params = model->parameters();
  InitParams(params, o.seed);  // the same on every rank and on the PyTorch side
  std::unique_ptr<DistributedDataParallel> ddp;
  if (!o.plain && !o.ps_async) {
    ddp = std::make_unique<DistributedDataParallel>(model.ptr(), pg, o.ddp);
  }
  int64_t nparams = 0;
  for (const auto& p : params) nparams += p.numel();
  const uint64_t init_hash = HashParams(params);
  // Comparable with the PyTorch side's (same ops, same library): the same initial values.
  const double init_sum = Flat(params).to(torch::kFloat64).sum().item<double>();

  torch::manual_seed(o.seed + 1 + rank);  // each rank its own data
  std::vector<at::Tensor> xs, ys;
  for (int i = 0; i < o.batches; ++i) {
    xs.push_back(torch::randn(InputShape(o.model, o.batch)));
    ys.push_back(torch::randint(0, 10, {o.batch}, torch::kInt64));
  }

  double data_sum = 0;  // comparable with the PyTorch side's: the same batches
  for (int i = 0; i < o.batches; ++i) {
    data_sum += xs[i].to(torch::kFloat64).sum().item<double>() + ys[i].sum().item<double>();
  }

  auto opt = std::make_shared<torch::optim::SGD>(
      params, torch::optim::SGDOptions(o.lr).momentum(o.momentum));
  std::unique_ptr<runtime::PsAsyncTraining> async;
  if (o.ps_async) {
    async = std::make_unique<runtime::PsAsyncTraining>(pg, opt, /*staleness=*/-1, o.ps_pipeline);
    async->Start(0);
  }
  double forward = 0, backward = 0, optimizer = 0;
  at::Tensor loss;
  auto step = [&](int i) {
    auto t0 = Clock::now();
    ZeroGrad(params);
    loss =
        torch::nn::functional::cross_entropy(model->forward(xs[i % o.batches]), ys[i % o.batches]);
    auto t1 = Clock::now();
    loss.backward();
    auto t2 = Clock::now();
    if (async) {
      async->Step();  // push the gradients, pull the servers' parameters
    } else {
      opt->step();
    }
    auto t3 = Clock::now();
    forward += std::chrono::duration<double>(t1 - t0).count();
    backward += std::chrono::duration<double>(t2 - t1).count();
    optimizer += std::chrono::duration<double>(t3 - t2).count();
  };
  for (int i = 0; i < o.warmup; ++i) step(i);
  forward = backward = optimizer = 0;
  const runtime::DdpStats before = ddp ? ddp->Stats() : runtime::DdpStats{};
  pg->Barrier();
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = Clock::now();
  for (int i = 0; i < o.steps; ++i) step(o.warmup + i);
  if (async) async->Drain();  // the last push's answer counts too
  const double elapsed = Since(t0);
  const double cpu = ProcessCpuSeconds() - cpu0;
  if (async) async->PullFinal();  // every rank the servers' final parameters, for the check
  const runtime::DdpStats after = ddp ? ddp->Stats() : runtime::DdpStats{};

  const double comm = after.total_comm_seconds - before.total_comm_seconds;
  const double exposed = after.total_exposed_seconds - before.total_exposed_seconds;
  const double seconds = Reduce(*pg, {elapsed}, collectives::ReduceOp::kMax)[0];
  const std::vector<double> sums =
      Reduce(*pg, {forward, backward, optimizer, comm, exposed, loss.item<double>(), cpu},
             collectives::ReduceOp::kSum);
  const double per_step_ms = 1e3 / (static_cast<double>(world) * o.steps);

  const char* side = o.ps_pipeline ? "cohort-ps-async-pipe" : "cohort-ps-async";
  if (!o.ps_async) side = o.plain ? "cohort-plain" : "cohort";
  nlohmann::json r = {{"side", side},
                      {"model", o.model},
                      {"params", nparams},
                      {"world", world},
                      {"backend", pg->Backend()},
                      {"ddp", ddp != nullptr},
                      {"batch", o.batch},
                      {"warmup", o.warmup},
                      {"steps", o.steps},
                      {"seconds", seconds},
                      {"samples_per_s", static_cast<double>(world) * o.batch * o.steps / seconds},
                      {"step_ms", seconds * 1e3 / o.steps},
                      {"phases_ms",
                       {{"forward", sums[0] * per_step_ms},
                        {"backward", sums[1] * per_step_ms},
                        {"optimizer", sums[2] * per_step_ms}}},
                      {"cpu_ms_per_step", sums[6] * per_step_ms},
                      {"loss", sums[5] / world},
                      {"init_hash", Hex(init_hash)},
                      {"init_sum", init_sum},
                      {"data_sum", data_sum}};
  if (ddp) {
    r["ddp_stats"] = {
        {"buckets", after.buckets},
        {"first_bucket_bytes", o.ddp.first_bucket_bytes},
        {"bucket_bytes", o.ddp.bucket_bytes},
        {"comm_ms_per_step", sums[3] * per_step_ms},
        {"exposed_ms_per_step", sums[4] * per_step_ms},
        {"overlap_fraction", sums[3] > 0 ? std::max(0.0, 1.0 - sums[4] / sums[3]) : 0.0},
        {"overlap_fraction_all_steps", after.OverlapFraction()},
        {"layout", ddp->BucketLayout()}};
  }
  if (rank == o.perturb_rank) {
    torch::NoGradGuard no_grad;
    at::Tensor p0 = params[0];
    p0.view({-1})[0].add_(1e-3);
  }
  const bool identical = ParamsIdentical(*pg, params, o.warmup + o.steps, &r);
  if (rank == 0 && !o.out.empty()) {
    std::ofstream f(o.out);
    f << r.dump(2) << "\n";
    if (!f) throw InvalidArgument(fmt::format("cannot write --out {}", o.out));
  }
  if (rank == 0) {
    std::printf("ddp_bench_worker: %s world %d: %.1f samples/s, %.2f ms/step%s\n", o.model.c_str(),
                world, r["samples_per_s"].get<double>(), r["step_ms"].get<double>(),
                identical ? "" : ", PARAMETERS DIFFER");
  }
  return identical ? 0 : 2;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  cohort::bench::Options o;
  CLI::App app{"cohort DDP benchmark worker (bench/ddp/ddp_bench.py starts it)"};
  app.add_option("--model", o.model, "cnn or mlp")->check(CLI::IsMember({"cnn", "mlp"}));
  app.add_option("--batch", o.batch, "samples per worker per step")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  app.add_option("--steps", o.steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--batches", o.batches, "distinct synthetic batches per rank")
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "model and data seed");
  app.add_option("--lr", o.lr, "SGD learning rate");
  app.add_option("--momentum", o.momentum, "SGD momentum");
  app.add_flag("--plain", o.plain, "no DDP (world size 1): the local training floor");
  app.add_flag("--ps-async", o.ps_async,
               "no DDP: the parameter servers (COHORT_PS_SERVERS) run SGD; each step pushes the "
               "gradients and pulls the parameters (ASP)");
  app.add_flag("--ps-pipeline", o.ps_pipeline,
               "--ps-async: each push overlaps the next step's forward and backward");
  app.add_option("--out", o.out, "rank 0 writes the result here (JSON)");
  app.add_option("--first-bucket-bytes", o.ddp.first_bucket_bytes, "DDP's first bucket cap")
      ->check(CLI::PositiveNumber);
  app.add_option("--bucket-bytes", o.ddp.bucket_bytes, "DDP's cap of the other buckets")
      ->check(CLI::PositiveNumber);
  app.add_option("--perturb-rank", o.perturb_rank,
                 "this rank changes one parameter before the final check (tests the check)");
  CLI11_PARSE(app, argc, argv);
  try {
    return cohort::bench::Run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddp_bench_worker: %s\n", e.what());
    return 1;
  }
}
