#include "examples/gpt/model.h"

#include <fmt/format.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>

#include "common/error.h"
#include "runtime/tensor_parallel.h"

namespace cohort::examples {
namespace {

using runtime::ColumnParallelLinear;
using runtime::ProcessGroup;
using runtime::RowParallelLinear;

struct Embed : torch::nn::Module {
  Embed(const GptConfig& c, const std::shared_ptr<ProcessGroup>& tp)
      : tok(c.vocab, c.dim, tp), pos(torch::nn::EmbeddingOptions(c.context, c.dim)) {
    register_module("tok", tok.module());
    register_module("pos", pos);
  }
  at::Tensor forward(const at::Tensor& ids) {
    const at::Tensor positions = torch::arange(ids.size(1), torch::kLong);
    return tok.Forward(ids) + pos->forward(positions).unsqueeze(0);
  }
  runtime::VocabParallelEmbedding tok;
  torch::nn::Embedding pos;
};

struct Block : torch::nn::Module {
  Block(const GptConfig& c, const std::shared_ptr<ProcessGroup>& tp)
      : heads(c.heads / tp->Size()),
        ln1(torch::nn::LayerNormOptions({c.dim})),
        q(c.dim, c.dim, tp, {true, false}),
        k(c.dim, c.dim, tp, {true, false}),
        v(c.dim, c.dim, tp, {true, false}),
        proj(c.dim, c.dim, tp, {true, true}),
        ln2(torch::nn::LayerNormOptions({c.dim})),
        fc1(c.dim, 4 * c.dim, tp, {true, false}),
        fc2(4 * c.dim, c.dim, tp, {true, true}) {
    register_module("ln1", ln1);
    register_module("q", q.module());
    register_module("k", k.module());
    register_module("v", v.module());
    register_module("proj", proj.module());
    register_module("ln2", ln2);
    register_module("fc1", fc1.module());
    register_module("fc2", fc2.module());
  }

  // [b, T, heads * hd] -> [b, heads, T, hd]
  at::Tensor SplitHeads(const at::Tensor& x) const {
    return x.view({x.size(0), x.size(1), heads, -1}).transpose(1, 2);
  }

  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = ln1->forward(x);
    const at::Tensor qh = SplitHeads(q.Forward(h)), kh = SplitHeads(k.Forward(h)),
                     vh = SplitHeads(v.Forward(h));
    const int64_t t = x.size(1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(qh.size(3)));
    const at::Tensor mask = torch::ones({t, t}, torch::kBool).triu(1);
    const at::Tensor att = torch::softmax(
        torch::matmul(qh, kh.transpose(2, 3)).mul(scale).masked_fill(mask, -1e9), -1);
    const at::Tensor y = torch::matmul(att, vh).transpose(1, 2).reshape({x.size(0), t, -1});
    const at::Tensor x1 = x + proj.Forward(y);
    return x1 + fc2.Forward(torch::gelu(fc1.Forward(ln2->forward(x1))));
  }

  int64_t heads;
  torch::nn::LayerNorm ln1;
  ColumnParallelLinear q, k, v;
  RowParallelLinear proj;
  torch::nn::LayerNorm ln2;
  ColumnParallelLinear fc1;
  RowParallelLinear fc2;
};

struct Head : torch::nn::Module {
  Head(const GptConfig& c, const std::shared_ptr<ProcessGroup>& tp)
      : ln(torch::nn::LayerNormOptions({c.dim})), out(c.dim, c.vocab, tp, {true, true}) {
    register_module("ln_f", ln);
    register_module("head", out.module());
  }
  at::Tensor forward(const at::Tensor& x) { return out.Forward(ln->forward(x)); }
  torch::nn::LayerNorm ln;
  ColumnParallelLinear out;
};

// The stage: its units in order, registered under their names in the whole model.
struct Stage : torch::nn::Module {
  std::vector<std::function<at::Tensor(const at::Tensor&)>> units;
};

void CheckDivides(int64_t n, const char* what, int tp) {
  if (n % tp != 0) {
    throw InvalidArgument(fmt::format(
        "gpt: {} = {} is not divisible by --tp {}; choose a --tp that divides it", what, n, tp));
  }
}

}  // namespace

std::vector<int> GptBoundaries(const GptConfig& config, int pp) {
  const int units = config.Units();
  if (pp < 1 || pp > units) {
    throw InvalidArgument(fmt::format(
        "gpt: --pp {} cannot cut {} units (embedding, {} blocks, head) into non-empty stages; "
        "use --pp between 1 and {}",
        pp, units, config.layers, units));
  }
  std::vector<int> b;
  for (int s = 1; s < pp; ++s) b.push_back(s * units / pp);
  return b;
}

std::shared_ptr<torch::nn::Module> MakeGptStage(const GptConfig& c,
                                                std::shared_ptr<ProcessGroup> tp, int first,
                                                int end) {
  CheckDivides(c.heads, "--heads", tp->Size());
  CheckDivides(c.vocab, "the vocabulary (128 characters)", tp->Size());
  if (c.dim % c.heads != 0) {
    throw InvalidArgument(
        fmt::format("gpt: --dim {} is not divisible by --heads {}", c.dim, c.heads));
  }
  auto stage = std::make_shared<Stage>();
  // Keeps unit u when it belongs to this stage, under its name in the whole model.
  auto keep = [&](int u, const std::string& name, auto module) {
    if (u < first || u >= end) return;
    stage->units.push_back([module](const at::Tensor& x) { return module->forward(x); });
    stage->register_module(name, module);
  };
  // Every unit is built on every rank, in order: the same RNG draws as the one-process model.
  for (int u = 0; u < c.Units(); ++u) {
    if (u == 0) {
      keep(u, "embed", std::make_shared<Embed>(c, tp));
    } else if (u <= c.layers) {
      keep(u, fmt::format("block{}", u - 1), std::make_shared<Block>(c, tp));
    } else {
      keep(u, "final", std::make_shared<Head>(c, tp));
    }
  }
  return stage;
}

at::Tensor GptStageForward(torch::nn::Module& stage, const at::Tensor& input) {
  auto& s = dynamic_cast<Stage&>(stage);
  at::Tensor x = input;
  for (const auto& unit : s.units) x = unit(x);
  return x;
}

}  // namespace cohort::examples
