// PsAsyncTraining in one process (a world of one) against a real PsServer on 127.0.0.1: the
// parameters a step gets back are the servers' SGD of its gradients, parameters without a
// gradient are pushed as zeros (of the largest's size, two of them here), and pipelined, a
// step's answer reaches the model one step later and PullFinal drains the last.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>

#include "collectives/ps/ps_server.h"
#include "runtime/process_group.h"
#include "runtime/ps_async.h"

namespace cohort::runtime {
namespace {

std::shared_ptr<ProcessGroup> Group() {
  static std::shared_ptr<ProcessGroup> pg = ProcessGroup::FromEnv();
  return pg;
}

class PsAsyncTrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<collectives::ps::PsServer>("127.0.0.1", 0, "", 0, 1);
    server_->Start();
    ::setenv("COHORT_PS_SERVERS", server_->Address().c_str(), 1);
    a_ = torch::ones({3}, torch::requires_grad());
    b_ = torch::zeros({5});  // b and c never get a gradient; c is the larger
    c_ = torch::full({11}, 2.0f);
    optimizer_ = std::make_shared<torch::optim::SGD>(std::vector<torch::Tensor>{a_, b_, c_},
                                                     torch::optim::SGDOptions(0.1));
  }
  void TearDown() override { ::unsetenv("COHORT_PS_SERVERS"); }

  // The gradient of a: 1, 2, 3.
  void Backward() { a_.mutable_grad() = torch::tensor({1.0f, 2.0f, 3.0f}); }
  // a after k of the servers' SGD steps (p = fma(g, -lr, p), lr as float).
  static std::vector<float> AAfter(int k) {
    std::vector<float> p = {1, 1, 1};
    for (int s = 0; s < k; ++s) {
      for (int i = 0; i < 3; ++i) p[i] = std::fma(static_cast<float>(i + 1), -0.1f, p[i]);
    }
    return p;
  }
  static std::vector<float> Values(const torch::Tensor& t) {
    return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  void ExpectModel(int k, const char* when) {
    EXPECT_EQ(Values(a_), AAfter(k)) << when;
    EXPECT_EQ(Values(b_), std::vector<float>(5, 0.0f)) << when;
    EXPECT_EQ(Values(c_), std::vector<float>(11, 2.0f)) << when;
  }

  std::unique_ptr<collectives::ps::PsServer> server_;
  torch::Tensor a_, b_, c_;
  std::shared_ptr<torch::optim::SGD> optimizer_;
};

TEST_F(PsAsyncTrainingTest, EachStepGetsTheServersSgdOfItsGradients) {
  PsAsyncTraining async(Group(), optimizer_, /*staleness=*/-1);
  EXPECT_FALSE(async.Pipelined());
  async.Start(0);
  for (int k = 1; k <= 3; ++k) {
    Backward();
    async.Step();
    ExpectModel(k, "after a step");
  }
  async.PullFinal();
  ExpectModel(3, "after PullFinal");
}

TEST_F(PsAsyncTrainingTest, PipelinedAStepsAnswerReachesTheModelOneStepLater) {
  PsAsyncTraining async(Group(), optimizer_, /*staleness=*/2, /*pipeline=*/true);
  EXPECT_TRUE(async.Pipelined());
  async.Start(0);
  Backward();
  async.Step();
  ExpectModel(0, "after the first pipelined step (its push is out)");
  for (int k = 1; k <= 2; ++k) {
    Backward();
    async.Step();
    ExpectModel(k, "after a pipelined step");
  }
  async.PullFinal();
  ExpectModel(3, "after PullFinal, which drains the push out");
  EXPECT_FALSE(PsAsyncTraining(Group(), optimizer_, /*staleness=*/0, true).Pipelined())
      << "BSP cannot overlap a push with the next step";
}

}  // namespace
}  // namespace cohort::runtime
