// Fashion-MNIST's CNN after a few SGD steps on random data (seeded), and helpers to compare a
// TorchScript archive's outputs with it. Header for torch TUs of tests/serving only.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/shard.h"
#include "examples/fashion_mnist/model.h"

namespace cohort::serving::testing {

inline std::shared_ptr<examples::FashionCnn> TrainedFashionCnn() {
  torch::manual_seed(7);
  auto model = examples::MakeFashionCnn();
  auto module = examples::AsModule(model);
  torch::optim::SGD sgd(module->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  for (int step = 0; step < 3; ++step) {
    const at::Tensor x = torch::randn({8, 1, 28, 28});
    const at::Tensor y = torch::randint(0, 10, {8}, torch::kLong);
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(examples::Forward(*model, x), y).backward();
    sgd.step();
  }
  module->eval();
  return model;
}

// A batch of inputs no training step saw.
inline at::Tensor TestBatch() {
  torch::manual_seed(1234);
  return torch::randn({5, 1, 28, 28});
}

inline at::Tensor Expected(examples::FashionCnn& model, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  return examples::Forward(model, x);
}

// The largest |a - b| of a TorchScript archive's forward(x) against expected.
inline double MaxDiffOfArchive(const std::string& model_pt, const at::Tensor& x,
                               const at::Tensor& expected) {
  std::istringstream in(model_pt);
  torch::jit::Module loaded = torch::jit::load(in);
  loaded.eval();
  torch::NoGradGuard no_grad;
  const at::Tensor got = loaded.forward({x}).toTensor();
  if (!got.sizes().equals(expected.sizes())) return 1e30;
  return (got - expected).abs().max().item<double>();
}

inline double MaxDiff(const std::vector<float>& got, const at::Tensor& expected) {
  const at::Tensor e = expected.contiguous();
  if (got.size() != static_cast<size_t>(e.numel())) return 1e30;
  const at::Tensor g = torch::from_blob(const_cast<float*>(got.data()), e.sizes());
  return (g - e).abs().max().item<double>();
}

inline std::vector<float> Floats(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

// The model's parameters as a snapshot's rank-0 shard would hold them ("model/<name>").
inline checkpoint::Shard ModelShard(const torch::nn::Module& module) {
  checkpoint::Shard shard;
  shard.step = 10;
  for (const auto& p : module.named_parameters()) {
    const at::Tensor t = p.value().detach().contiguous();
    shard.tensors.push_back(checkpoint::HostTensor::Copy(
        "model/" + p.key(), collectives::DType::kFloat32,
        std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), t.data_ptr()));
  }
  return shard;
}

}  // namespace cohort::serving::testing
