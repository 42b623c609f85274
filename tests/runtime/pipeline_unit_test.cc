// Pipeline parts in one process: the schedules' orders and peaks, micro-batch sizes, stage cuts
// (balanced, checked, global parameter names), a one-stage pipeline against the plain model, and
// bad input.
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "common/error.h"
#include "runtime/pipeline.h"
#include "runtime/process_group.h"

namespace cohort::runtime {
namespace {

using A = PipelineAction;

std::string Order(const std::vector<A>& actions) {
  std::string s;
  for (const auto& a : actions) {
    s += (a.kind == A::kForward ? "F" : "B") + std::to_string(a.micro) + " ";
  }
  return s;
}

TEST(PipelineSchedule, GPipeRunsEveryForwardThenEveryBackward) {
  EXPECT_EQ(Order(MakePipelineSchedule(PipelineSchedule::kGPipe, 3, 1, 3)), "F0 F1 F2 B0 B1 B2 ");
}

TEST(PipelineSchedule, OneFOneBWarmsUpThenAlternates) {
  const auto k = PipelineSchedule::k1F1B;
  EXPECT_EQ(Order(MakePipelineSchedule(k, 4, 0, 6)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  EXPECT_EQ(Order(MakePipelineSchedule(k, 4, 2, 6)), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5 ");
  EXPECT_EQ(Order(MakePipelineSchedule(k, 4, 3, 3)), "F0 B0 F1 B1 F2 B2 ");
  // Fewer micro-batches than stages: the warm-up is cut short.
  EXPECT_EQ(Order(MakePipelineSchedule(k, 4, 0, 2)), "F0 F1 B0 B1 ");
}

TEST(PipelineSchedule, EveryMicroBatchOnceAndLastActionIsTheLastBackward) {
  for (auto k : {PipelineSchedule::kGPipe, PipelineSchedule::k1F1B}) {
    for (int p = 1; p <= 5; ++p) {
      for (int s = 0; s < p; ++s) {
        for (int m = 1; m <= 9; ++m) {
          const auto a = MakePipelineSchedule(k, p, s, m);
          ASSERT_EQ(a.size(), 2u * m);
          EXPECT_EQ(a.back(), (A{A::kBackward, m - 1}));
          int live = 0, peak = 0, next_f = 0, next_b = 0;
          for (const auto& x : a) {
            if (x.kind == A::kForward) {
              EXPECT_EQ(x.micro, next_f++);
              peak = std::max(peak, ++live);
            } else {
              EXPECT_EQ(x.micro, next_b++);
              EXPECT_LT(x.micro, next_f);
              --live;
            }
          }
          EXPECT_EQ(peak, PeakInFlight(k, p, s, m));
        }
      }
    }
  }
  EXPECT_EQ(PeakInFlight(PipelineSchedule::k1F1B, 4, 0, 16), 4);
  EXPECT_EQ(PeakInFlight(PipelineSchedule::kGPipe, 4, 0, 16), 16);
}

TEST(PipelineSchedule, ParsesNamesAndRefusesOthers) {
  EXPECT_EQ(ParsePipelineSchedule("GPipe"), PipelineSchedule::kGPipe);
  EXPECT_EQ(ParsePipelineSchedule("1f1b"), PipelineSchedule::k1F1B);
  EXPECT_THROW(ParsePipelineSchedule("interleaved"), InvalidArgument);
  EXPECT_THROW(MakePipelineSchedule(PipelineSchedule::kGPipe, 2, 2, 1), InvalidArgument);
  EXPECT_THROW(MakePipelineSchedule(PipelineSchedule::kGPipe, 2, 0, 0), InvalidArgument);
  EXPECT_DOUBLE_EQ(TheoreticalBubble(4, 8), 3.0 / 11.0);
}

TEST(PipelineSchedule, MicroBatchesAsTensorSplitCutsThem) {
  EXPECT_EQ(MicroBatchSizes(14, 4), (std::vector<int64_t>{4, 4, 3, 3}));
  EXPECT_EQ(MicroBatchSizes(7, 7), (std::vector<int64_t>(7, 1)));
  EXPECT_THROW(MicroBatchSizes(3, 4), InvalidArgument);
}

TEST(PipelineSchedule, BalancedBoundariesMinimizeTheLargestStage) {
  EXPECT_EQ(BalancedBoundaries({10, 10, 10, 10}, 2), (std::vector<int>{2}));
  EXPECT_EQ(BalancedBoundaries({30, 0, 10, 0, 10, 0, 10}, 2), (std::vector<int>{1}));
  EXPECT_EQ(BalancedBoundaries({1, 1, 1, 1, 1}, 5), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(BalancedBoundaries({5, 1, 1, 1, 1, 1}, 3).size(), 2u);
  EXPECT_THROW(BalancedBoundaries({1, 1}, 3), InvalidArgument);
  EXPECT_NO_THROW(CheckBoundaries({1, 3}, 4, 3));
  EXPECT_THROW(CheckBoundaries({3, 1}, 4, 3), InvalidArgument);
  EXPECT_THROW(CheckBoundaries({1, 4}, 4, 3), InvalidArgument);
  EXPECT_THROW(CheckBoundaries({2}, 4, 3), InvalidArgument);
}

torch::nn::Sequential Model() {
  torch::manual_seed(7);
  return torch::nn::Sequential(torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 3));
}

TEST(Pipeline, OneStageKeepsGlobalNamesAndEqualsThePlainModel) {
  auto pg = ProcessGroup::FromEnv();
  ASSERT_EQ(pg->Size(), 1);
  auto model = Model();
  auto plain = Model();
  PipelineOptions opts;
  opts.micro_batches = 3;
  auto pipe = Pipeline::FromSequential(pg, model.ptr(), {}, opts);
  std::vector<std::string> names;
  for (const auto& [name, p] : pipe->NamedParameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
  EXPECT_EQ(pipe->Layers(), std::make_pair(0, 3));
  torch::manual_seed(1);
  auto x = torch::randn({8, 6}), y = torch::randn({8, 3});
  auto mse = [](const at::Tensor& o, const at::Tensor& t) { return torch::mse_loss(o, t); };
  const double loss = pipe->Step(x, y, mse);
  auto ref = mse(plain->forward(x), y);
  ref.backward();
  EXPECT_NEAR(loss, ref.item<double>(), 1e-6);  // micro-batches of 3, 3, 2 rows, weighted
  for (size_t i = 0; i < plain->parameters().size(); ++i) {
    EXPECT_LT(
        (model->parameters()[i].grad() - plain->parameters()[i].grad()).abs().max().item<double>(),
        1e-6);
  }
  EXPECT_EQ(pipe->Stats().peak_in_flight, 1);  // 1F1B on one stage: one at a time
  EXPECT_THROW(pipe->Step(x.slice(0, 0, 2), y.slice(0, 0, 2), mse), InvalidArgument);
  EXPECT_THROW(pipe->Step(x, y.slice(0, 0, 4), mse), InvalidArgument);
}

TEST(Pipeline, RefusesBadConstruction) {
  auto pg = ProcessGroup::FromEnv();
  auto model = Model();
  EXPECT_THROW(Pipeline::FromSequential(pg, model.ptr(), {1}, {}), InvalidArgument);
  EXPECT_THROW(Pipeline::FromSequential(nullptr, model.ptr(), {}, {}), InvalidArgument);
  PipelineOptions bad;
  bad.micro_batches = 0;
  EXPECT_THROW(Pipeline::Balanced(pg, model.ptr(), bad), InvalidArgument);
}

}  // namespace
}  // namespace cohort::runtime
