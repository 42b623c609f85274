// Tensor parallelism in one process. A ProcessGroup over a stub communicator of any size lets
// one process build every rank's shards (construction moves nothing), so the test can put them
// together and compare them with the unsharded torch layers bit for bit; a world of one runs
// the layers for real and must equal torch::nn::Linear / Embedding exactly.
#include <gtest/gtest.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "collectives/communicator.h"
#include "common/error.h"
#include "runtime/process_group.h"
#include "runtime/tensor_parallel.h"

namespace cohort::runtime {
namespace {

// Rank `rank` of a group of `size` whose operations all fail: enough to construct layers.
class StubCommunicator : public collectives::Communicator {
 public:
  StubCommunicator(int rank, int size) : Communicator(Config(rank, size)) {}
  const char* Backend() const override { return "stub"; }

 protected:
  collectives::WorkPtr Submit(collectives::Op op) override {
    throw Unsupported("the stub group of tensor_parallel_unit_test moves nothing");
  }

 private:
  static collectives::CommConfig Config(int rank, int size) {
    collectives::CommConfig c;
    c.rank = rank;
    c.size = size;
    return c;
  }
};

std::shared_ptr<ProcessGroup> StubGroup(int rank, int size) {
  return std::make_shared<ProcessGroup>(nullptr, std::make_unique<StubCommunicator>(rank, size));
}

std::shared_ptr<ProcessGroup> WorldOfOne() {
  static auto pg = ProcessGroup::FromEnv();
  return pg;
}

bool Same(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && torch::equal(a, b);
}

class ShardsAtInit : public ::testing::TestWithParam<int> {};

TEST_P(ShardsAtInit, PutTogetherEqualTheUnshardedLayers) {
  const int p = GetParam();
  torch::manual_seed(3);
  torch::nn::Linear col_ref(6, 12), row_ref(12, 5);
  torch::nn::Embedding emb_ref(24, 4);
  std::vector<torch::Tensor> col_w, col_b, row_w, row_b, emb_w;
  for (int r = 0; r < p; ++r) {
    torch::manual_seed(3);  // every rank builds its layers under the same RNG state
    ColumnParallelLinear col(6, 12, StubGroup(r, p));
    RowParallelLinear row(12, 5, StubGroup(r, p));
    VocabParallelEmbedding emb(24, 4, StubGroup(r, p));
    col_w.push_back(col.weight());
    col_b.push_back(col.bias());
    row_w.push_back(row.weight());
    row_b.push_back(row.bias());
    emb_w.push_back(emb.weight());
    EXPECT_EQ(col.weight().sizes(), (std::vector<int64_t>{12 / p, 6}));
    EXPECT_EQ(row.weight().sizes(), (std::vector<int64_t>{5, 12 / p}));
  }
  EXPECT_TRUE(Same(torch::cat(col_w, 0), col_ref->weight));
  EXPECT_TRUE(Same(torch::cat(col_b, 0), col_ref->bias));
  EXPECT_TRUE(Same(torch::cat(row_w, 1), row_ref->weight));
  for (const auto& b : row_b) EXPECT_TRUE(Same(b, row_ref->bias));  // replicated
  EXPECT_TRUE(Same(torch::cat(emb_w, 0), emb_ref->weight));
}

INSTANTIATE_TEST_SUITE_P(TensorParallel, ShardsAtInit, ::testing::Values(1, 2, 3, 4));

// The one-line error, and nothing else, for each layer's cut dimension.
TEST(TensorParallel, SizeThatTpDoesNotDivideIsOneLineError) {
  auto expect = [](auto make, const std::string& message) {
    try {
      make();
      ADD_FAILURE() << "no error; expected: " << message;
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  };
  auto tp3 = StubGroup(1, 3);
  expect([&] { ColumnParallelLinear(4, 10, tp3); },
         "ColumnParallelLinear: out_features 10 is not divisible by the tensor-parallel size 3; "
         "choose a size that divides it or pad the layer");
  expect([&] { RowParallelLinear(10, 4, tp3); },
         "RowParallelLinear: in_features 10 is not divisible by the tensor-parallel size 3; "
         "choose a size that divides it or pad the layer");
  expect([&] { VocabParallelEmbedding(100, 4, tp3); },
         "VocabParallelEmbedding: vocab_size 100 is not divisible by the tensor-parallel size 3; "
         "choose a size that divides it or pad the layer");
  expect([&] { ColumnParallelLinear(4, 6, nullptr); },
         "ColumnParallelLinear: the tensor-parallel group is null");
  expect([&] { ColumnParallelLinear(0, 6, tp3); },
         "ColumnParallelLinear: in_features is 0; it must be at least 1");
  expect(
      [&] {
        ScatterToTensorParallelRegion(torch::zeros({2, 7}), tp3);
      },
      "ScatterToTensorParallelRegion: the last dimension 7 is not divisible by the "
      "tensor-parallel size 3; choose sizes that tp divides");
}

TEST(TensorParallel, WrongInputShapeIsOneLineError) {
  RowParallelLinear row(12, 5, StubGroup(0, 3));
  try {
    row.Forward(torch::zeros({2, 12}));
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()),
              "RowParallelLinear: the input's last dimension must be 4 (in_features 12 / "
              "tensor-parallel size 3), got shape 2x12; pass the full input with "
              "input_is_parallel=false");
  }
  VocabParallelEmbedding emb(6, 2, WorldOfOne());
  EXPECT_THROW(emb.Forward(torch::tensor({1, 6}, torch::kLong)), InvalidArgument);
  EXPECT_THROW(emb.Forward(torch::zeros({2})), InvalidArgument);
}

// Scatter moves nothing forward: rank 1 of 3 keeps columns [2, 4).
TEST(TensorParallel, ScatterKeepsThisRanksSliceOfTheLastDim) {
  auto x = torch::arange(12, torch::kFloat).view({2, 6});
  auto y = ScatterToTensorParallelRegion(x, StubGroup(1, 3));
  EXPECT_TRUE(Same(y, x.narrow(1, 2, 2)));
  EXPECT_TRUE(y.is_contiguous());
}

// A world of one: the layers are the torch layers, forward and backward, exactly.
TEST(TensorParallel, WorldOfOneEqualsTorchLayers) {
  auto tp = WorldOfOne();
  ASSERT_EQ(tp->Size(), 1);
  torch::manual_seed(9);
  torch::nn::Embedding emb_ref(10, 6);
  torch::nn::Linear fc1_ref(6, 8), fc2_ref(8, 6);
  torch::manual_seed(9);
  VocabParallelEmbedding emb(10, 6, tp);
  ColumnParallelLinear fc1(6, 8, tp, {true, false});
  RowParallelLinear fc2(8, 6, tp, {true, true});
  auto ids = torch::randint(10, {3, 4}, torch::kLong);
  namespace F = torch::nn::functional;
  auto out = fc2.Forward(F::gelu(fc1.Forward(emb.Forward(ids))));
  auto ref = fc2_ref(F::gelu(fc1_ref(emb_ref(ids))));
  EXPECT_TRUE(Same(out, ref));
  out.square().sum().backward();
  ref.square().sum().backward();
  EXPECT_TRUE(Same(emb.weight().grad(), emb_ref->weight.grad()));
  EXPECT_TRUE(Same(fc1.weight().grad(), fc1_ref->weight.grad()));
  EXPECT_TRUE(Same(fc2.weight().grad(), fc2_ref->weight.grad()));
  EXPECT_TRUE(Same(fc2.bias().grad(), fc2_ref->bias.grad()));
  const auto comm = TensorParallelComm();
  EXPECT_EQ(comm.all_reduces + comm.all_gathers, 0);
}

struct Block : torch::nn::Module {
  explicit Block(const std::shared_ptr<ProcessGroup>& tp)
      : fc1(6, 12, tp, {false, false}), fc2(12, 6, tp) {
    register_module("fc1", fc1.module());
    register_module("fc2", fc2.module());
    register_module("norm", torch::nn::Linear(6, 6));
  }
  ColumnParallelLinear fc1;
  RowParallelLinear fc2;
};

struct Model : torch::nn::Module {
  explicit Model(const std::shared_ptr<ProcessGroup>& tp) : emb(30, 6, tp) {
    register_module("emb", emb.module());
    register_module("block", std::make_shared<Block>(tp));
  }
  VocabParallelEmbedding emb;
};

// Dotted names as named_parameters() spells them; replicated parameters absent.
TEST(TensorParallel, ShardingsNameEveryShardedParameter) {
  Model model(StubGroup(2, 3));
  const auto shards = TensorParallelShardings(model);
  std::vector<std::string> names;
  for (const auto& [name, shard] : shards) names.push_back(name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"block.fc1.weight", "block.fc2.weight", "emb.weight"}));
  const auto params = model.named_parameters();
  for (const auto& [name, shard] : shards) {
    ASSERT_TRUE(params.contains(name)) << name;
    EXPECT_EQ(shard.parts, 3);
    EXPECT_EQ(shard.offset, 2 * params[name].size(shard.dim)) << name;
  }
  EXPECT_EQ(shards.at("emb.weight").global_shape, (std::vector<int64_t>{30, 6}));
  EXPECT_EQ(shards.at("emb.weight").dim, 0);
  EXPECT_EQ(shards.at("block.fc2.weight").global_shape, (std::vector<int64_t>{6, 12}));
  EXPECT_EQ(shards.at("block.fc2.weight").dim, 1);
  // A layer asked directly: its own names.
  ColumnParallelLinear col(6, 12, StubGroup(0, 2));
  const auto own = TensorParallelShardings(*col.module());
  EXPECT_EQ(own.size(), 2u);
  EXPECT_EQ(own.at("bias").global_shape, (std::vector<int64_t>{12}));
}

}  // namespace
}  // namespace cohort::runtime
