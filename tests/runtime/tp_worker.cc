// One rank of a tensor-parallel equivalence run (started by tensor_parallel_test, directly or
// under mpirun). Builds, from one seed, the tensor-parallel model (VocabParallelEmbedding ->
// ColumnParallelLinear -> GELU -> RowParallelLinear) over its tp group and, in this process,
// the unsharded reference (Embedding -> Linear -> GELU -> Linear), trains both K SGD steps on the
// same batches and checks:
//   - at init, the shards put together equal the reference's weights exactly;
//   - every step's loss equals the reference's within --tol (relative);
//   - after training, the gathered parameters are within --tol of the reference's, and the
//     replicated ones are identical on every tp rank;
//   - the collectives counted per step are Megatron's (bytes included).
// With --tp smaller than the world, the world is split into groups of --tp consecutive ranks
// that train side by side. Prints one RESULT line; exits 1 with the reasons when a check fails.
#include <fmt/format.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "runtime/process_group.h"
#include "runtime/tensor_parallel.h"

namespace {

using cohort::runtime::ProcessGroup;
using cohort::runtime::TensorShard;
namespace F = torch::nn::functional;
namespace rt = cohort::runtime;

constexpr int64_t kVocab = 30, kDim = 8, kHidden = 24, kBatch = 4, kSeq = 5;

// gathered: Column gathers its output and Row scatters it again; otherwise the Megatron pair.
struct TpNet : torch::nn::Module {
  TpNet(const std::shared_ptr<ProcessGroup>& tp, bool gathered, bool bias)
      : emb(kVocab, kDim, tp),
        fc1(kDim, kHidden, tp, {bias, /*gather_output=*/gathered}),
        fc2(kHidden, kDim, tp, {bias, /*input_is_parallel=*/!gathered}) {
    register_module("emb", emb.module());
    register_module("fc1", fc1.module());
    register_module("fc2", fc2.module());
  }
  torch::Tensor Loss(const torch::Tensor& ids, const torch::Tensor& y) const {
    return F::mse_loss(fc2.Forward(F::gelu(fc1.Forward(emb.Forward(ids)))), y);
  }
  rt::VocabParallelEmbedding emb;
  rt::ColumnParallelLinear fc1;
  rt::RowParallelLinear fc2;
};

struct RefNet : torch::nn::Module {
  explicit RefNet(bool bias)
      : emb(register_module("emb", torch::nn::Embedding(kVocab, kDim))),
        fc1(register_module("fc1",
                            torch::nn::Linear(torch::nn::LinearOptions(kDim, kHidden).bias(bias)))),
        fc2(register_module(
            "fc2", torch::nn::Linear(torch::nn::LinearOptions(kHidden, kDim).bias(bias)))) {}
  torch::Tensor Loss(const torch::Tensor& ids, const torch::Tensor& y) {
    return F::mse_loss(fc2(F::gelu(fc1(emb(ids)))), y);
  }
  torch::nn::Embedding emb;
  torch::nn::Linear fc1, fc2;
};

struct Batch {
  torch::Tensor ids, y;
};

Batch MakeBatch(int step) {
  torch::manual_seed(5000 + step);
  return {torch::randint(kVocab, {kBatch, kSeq}, torch::kLong), torch::randn({kBatch, kSeq, kDim})};
}

// The whole tensor from every tp rank's slice, concatenated along the shard's dimension.
torch::Tensor Gather(const torch::Tensor& local, const TensorShard& s, ProcessGroup& tp) {
  auto in = local.detach().contiguous();
  auto flat = torch::empty({s.parts * in.numel()}, in.options());
  tp.AllGather(in, flat)->Wait();
  std::vector<torch::Tensor> parts;
  for (int p = 0; p < s.parts; ++p) {
    parts.push_back(flat.narrow(0, p * in.numel(), in.numel()).view(in.sizes()));
  }
  return torch::cat(parts, s.dim);
}

struct Compare {
  double max_diff = 0;        // largest |gathered tp parameter - reference parameter|
  double replica_spread = 0;  // largest difference of a replicated parameter between tp ranks
  std::string problems;       // sharding metadata that is wrong
};

Compare CompareParams(TpNet& net, RefNet& ref, ProcessGroup& tp) {
  Compare c;
  const auto shards = rt::TensorParallelShardings(net);
  const auto want = ref.named_parameters();
  for (const auto& item : net.named_parameters()) {
    const torch::Tensor& ref_param = want[item.key()];
    torch::Tensor whole = item.value().detach();
    auto it = shards.find(item.key());
    if (it != shards.end()) {
      const TensorShard& s = it->second;
      if (s.global_shape != ref_param.sizes().vec() || s.parts != tp.Size() ||
          s.offset != tp.Rank() * whole.size(s.dim)) {
        c.problems += fmt::format(" bad shard metadata for {}", item.key());
      }
      whole = Gather(whole, s, tp);
    } else {
      auto hi = whole.clone(), lo = whole.clone();
      tp.AllReduce(hi, cohort::collectives::ReduceOp::kMax)->Wait();
      tp.AllReduce(lo, cohort::collectives::ReduceOp::kMin)->Wait();
      c.replica_spread = std::max(c.replica_spread, (hi - lo).abs().max().item<double>());
    }
    c.max_diff = std::max(c.max_diff, (whole - ref_param).abs().max().item<double>());
  }
  if (shards.size() != (want.contains("fc1.bias") ? 4u : 3u)) {
    c.problems += fmt::format(" {} sharded parameters", shards.size());
  }
  return c;
}

// Megatron's collectives per step: all-reduces of [b, s, dim] (embedding forward, RowParallel
// forward, ColumnParallel's input gradient); gathered adds all-gathers of [b, s, hidden]
// (ColumnParallel's output forward, RowParallel's input gradient).
std::string CheckComm(const rt::TensorParallelCommStats& c, int steps, int tp, bool gathered) {
  if (tp == 1) {
    return c.all_reduces + c.all_gathers == 0 ? "" : " a group of one moved bytes";
  }
  const int64_t ar = 3 * steps, ag = gathered ? 2 * steps : 0;
  const int64_t ar_bytes = ar * kBatch * kSeq * kDim * 4;
  const int64_t ag_bytes = ag * kBatch * kSeq * kHidden * 4;
  if (c.all_reduces == ar && c.all_reduce_bytes == ar_bytes && c.all_gathers == ag &&
      c.all_gather_bytes == ag_bytes) {
    return "";
  }
  return fmt::format(" collectives {} AR / {} B, {} AG / {} B; expected {} / {}, {} / {}",
                     c.all_reduces, c.all_reduce_bytes, c.all_gathers, c.all_gather_bytes, ar,
                     ar_bytes, ag, ag_bytes);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tensor-parallel equivalence worker"};
  std::string mode = "parallel";
  int steps = 3, tp_size = 0;
  bool no_bias = false;
  double tol = 1e-5;
  app.add_option("--mode", mode, "parallel (Megatron's pair) or gathered");
  app.add_option("--steps", steps);
  app.add_option("--tp", tp_size, "tensor-parallel size (default: the world)");
  app.add_flag("--no-bias", no_bias);
  app.add_option("--tol", tol);
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(1);
    auto world = ProcessGroup::FromEnv();
    if (tp_size == 0) tp_size = world->Size();
    auto tp = tp_size == world->Size()
                  ? world
                  : world->Split(world->Rank() / tp_size, world->Rank(),
                                 fmt::format("tp-{}", world->Rank() / tp_size));
    const bool gathered = mode == "gathered";
    torch::manual_seed(42);
    RefNet ref(!no_bias);
    torch::manual_seed(42);
    TpNet net(tp, gathered, !no_bias);
    const Compare init = CompareParams(net, ref, *tp);

    torch::optim::SGD opt(net.parameters(), torch::optim::SGDOptions(0.5).momentum(0.9));
    torch::optim::SGD ref_opt(ref.parameters(), torch::optim::SGDOptions(0.5).momentum(0.9));
    rt::ResetTensorParallelComm();
    double max_loss_rel = 0;
    for (int s = 0; s < steps; ++s) {
      const Batch b = MakeBatch(s);
      opt.zero_grad();
      ref_opt.zero_grad();
      auto loss = net.Loss(b.ids, b.y);
      auto ref_loss = ref.Loss(b.ids, b.y);
      loss.backward();
      ref_loss.backward();
      opt.step();
      ref_opt.step();
      const double l = loss.item<double>(), r = ref_loss.item<double>();
      max_loss_rel = std::max(max_loss_rel, std::abs(l - r) / std::max(std::abs(r), 1e-12));
    }
    const auto comm = rt::TensorParallelComm();
    const Compare end = CompareParams(net, ref, *tp);

    std::cout << fmt::format(
                     "RESULT rank={} world={} tp={} backend={} mode={} init_diff={:.3g} "
                     "loss_rel={:.3g} param_diff={:.3g} replica_spread={:.3g} all_reduce_bytes={} "
                     "all_gather_bytes={}",
                     world->Rank(), world->Size(), tp->Size(), tp->Backend(), mode, init.max_diff,
                     max_loss_rel, end.max_diff, end.replica_spread, comm.all_reduce_bytes,
                     comm.all_gather_bytes)
              << std::endl;
    std::string failure = init.problems + CheckComm(comm, steps, tp->Size(), gathered);
    if (init.max_diff != 0) failure += fmt::format(" init shards differ by {}", init.max_diff);
    if (!(max_loss_rel <= tol)) failure += fmt::format(" loss differs by {} rel", max_loss_rel);
    if (!(end.max_diff <= tol)) failure += fmt::format(" params differ by {}", end.max_diff);
    if (end.replica_spread != 0) failure += " replicated params differ between tp ranks";
    if (!failure.empty()) {
      std::cerr << "FAIL rank " << world->Rank() << ":" << failure << std::endl;
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ERROR " << e.what() << std::endl;
    return 2;
  }
}
