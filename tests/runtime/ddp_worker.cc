// One rank of a DDP equivalence run (started by ddp_test, directly or under mpirun). It trains a
// small model with DistributedDataParallel for K steps on this rank's batches, and, on the side,
// a reference copy of the model in this one process on every rank's batches (the union), then
// checks: every parameter equals the reference within --tol, and every rank holds exactly the
// same parameters. Prints one RESULT line; exits 1 with the reason when a check fails.
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "runtime/ddp.h"
#include "runtime/process_group.h"

namespace {

using cohort::runtime::DdpOptions;
using cohort::runtime::DistributedDataParallel;
using cohort::runtime::GradCompression;
using cohort::runtime::ProcessGroup;

constexpr int64_t kIn = 13, kHidden = 31, kMid = 17, kOut = 5;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(kIn, kHidden));
    fc2 = register_module("fc2", torch::nn::Linear(kHidden, kMid));
    head = register_module("head", torch::nn::Linear(kMid, kOut));
    aux = register_module("aux", torch::nn::Linear(kMid, kOut));      // used on some steps
    never = register_module("never", torch::nn::Linear(kMid, kOut));  // used on none
  }
  // Loss of this model on one rank's batch; aux joins the loss when use_aux.
  torch::Tensor Loss(const torch::Tensor& x, const torch::Tensor& y, bool use_aux) {
    auto h = torch::tanh(fc2(torch::tanh(fc1(x))));
    auto loss = torch::mse_loss(head(h), y);
    if (use_aux) loss = loss + torch::mse_loss(aux(h), y);
    return loss;
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, head{nullptr}, aux{nullptr}, never{nullptr};
};
TORCH_MODULE(Net);

struct Batch {
  torch::Tensor x, y;
};

// The batch of rank r at (step, micro): the same on every rank that asks.
Batch MakeBatch(int64_t batch, int step, int micro, int r) {
  torch::manual_seed(100000 + step * 1000 + micro * 100 + r);
  return {torch::randn({batch, kIn}), torch::randn({batch, kOut})};
}

bool UsesAux(const std::string& mode, int step, int r) {
  return mode == "unused" && (step + r) % 2 == 0;
}

torch::Tensor Flatten(Net& net) {
  std::vector<torch::Tensor> parts;
  for (auto& p : net->parameters()) parts.push_back(p.detach().reshape({-1}));
  return torch::cat(parts);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"DDP equivalence worker"};
  std::string mode = "plain";
  int steps = 4, micro = 1;
  int64_t batch = 7;
  size_t bucket_bytes = size_t{25} << 20, first_bucket_bytes = size_t{1} << 20;
  bool find_unused = false;
  std::string compression = "none";
  double tol = 1e-5;
  int expect_buckets = -1;
  app.add_option("--mode", mode, "plain, accumulate or unused");
  app.add_option("--steps", steps);
  app.add_option("--micro", micro, "micro-batches per step (accumulate)");
  app.add_option("--batch", batch, "examples per rank per micro-batch");
  app.add_option("--bucket-bytes", bucket_bytes);
  app.add_option("--first-bucket-bytes", first_bucket_bytes);
  app.add_flag("--find-unused", find_unused);
  app.add_option("--compression", compression, "none, fp16 or bf16");
  app.add_option("--tol", tol, "max |ddp - reference| allowed");
  app.add_option("--expect-buckets", expect_buckets);
  CLI11_PARSE(app, argc, argv);

  try {
    torch::set_num_threads(1);
    auto pg = ProcessGroup::FromEnv();
    const int rank = pg->Rank(), world = pg->Size();

    // The reference starts from rank 0's initial parameters; DDP's broadcast gives every rank
    // rank 0's parameters too, whatever its own initialization was.
    torch::manual_seed(1234);
    Net ref;
    torch::manual_seed(1234 + rank);
    Net net;
    DdpOptions opts;
    opts.bucket_bytes = bucket_bytes;
    opts.first_bucket_bytes = first_bucket_bytes;
    opts.find_unused_parameters = find_unused;
    opts.compression = compression == "fp16"   ? GradCompression::kFloat16
                       : compression == "bf16" ? GradCompression::kBFloat16
                                               : GradCompression::kNone;
    DistributedDataParallel ddp(net.ptr(), pg, opts);
    const double momentum = mode == "unused" ? 0.0 : 0.9;
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(momentum));
    torch::optim::SGD ref_opt(ref->parameters(), torch::optim::SGDOptions(0.05).momentum(momentum));

    for (int s = 0; s < steps; ++s) {
      opt.zero_grad();
      ref_opt.zero_grad();
      for (int m = 0; m < micro; ++m) {
        Batch mine = MakeBatch(batch, s, m, rank);
        auto loss = net->Loss(mine.x, mine.y, UsesAux(mode, s, rank)) / micro;
        if (m + 1 < micro) {
          auto guard = ddp.NoSync();
          loss.backward();
        } else {
          loss.backward();
        }
        // Reference: the mean over ranks of each rank's loss, in one process.
        torch::Tensor total = torch::zeros({});
        for (int r = 0; r < world; ++r) {
          Batch b = MakeBatch(batch, s, m, r);
          total = total + ref->Loss(b.x, b.y, UsesAux(mode, s, r));
        }
        (total / (world * micro)).backward();
      }
      opt.step();
      ref_opt.step();
    }

    torch::NoGradGuard no_grad;
    const double max_diff = (Flatten(net) - Flatten(ref)).abs().max().item<double>();
    // Ranks must agree exactly: compare each parameter's max and min over ranks.
    auto mine = Flatten(net);
    auto hi = mine.clone(), lo = mine.clone();
    pg->AllReduce(hi, cohort::collectives::ReduceOp::kMax)->Wait();
    pg->AllReduce(lo, cohort::collectives::ReduceOp::kMin)->Wait();
    const double spread = (hi - lo).abs().max().item<double>();
    const auto stats = ddp.Stats();
    const bool never_grad = net->never->weight.grad().defined();
    std::cout << fmt::format(
                     "RESULT rank={} world={} backend={} max_diff_ref={:.3g} rank_spread={:.3g} "
                     "buckets={} steps={} never_grad={} overlap={:.2f}",
                     rank, world, pg->Backend(), max_diff, spread, stats.buckets, stats.steps,
                     never_grad ? "defined" : "undefined", stats.OverlapFraction())
              << std::endl;
    std::string failure;
    if (!(max_diff <= tol)) failure += fmt::format(" differs from the reference by {}", max_diff);
    if (spread != 0) failure += fmt::format(" ranks differ by {}", spread);
    if (stats.steps != steps)
      failure += fmt::format(" {} synced steps, not {}", stats.steps, steps);
    if (expect_buckets >= 0 && stats.buckets != expect_buckets) {
      failure += fmt::format(" {} buckets, not {}", stats.buckets, expect_buckets);
    }
    if (mode == "unused" && never_grad == find_unused) {
      failure += fmt::format(" never-used parameter's grad is {} with find_unused={}",
                             never_grad ? "defined" : "undefined", find_unused);
    }
    if (!failure.empty()) {
      std::cerr << "FAIL rank " << rank << ":" << failure << std::endl;
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ERROR " << e.what() << std::endl;
    return 2;
  }
}
