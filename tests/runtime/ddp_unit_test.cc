// DistributedDataParallel in one process (a world of one): bucket layout, the rebuild from the
// observed gradient order, statistics, NoSync, and bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/error.h"
#include "runtime/ddp.h"
#include "runtime/process_group.h"

namespace cohort::runtime {
namespace {

// Six 512x512 layers: each weight is exactly 1 MiB of f32, each bias 2 KiB.
struct Tower : torch::nn::Module {
  Tower() {
    for (int i = 0; i < 6; ++i) {
      layers.push_back(register_module("fc" + std::to_string(i), torch::nn::Linear(512, 512)));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (auto& l : layers) x = torch::relu(l(x));
    return x;
  }
  std::vector<torch::nn::Linear> layers;
};

std::shared_ptr<ProcessGroup> Group() {
  static std::shared_ptr<ProcessGroup> pg = ProcessGroup::FromEnv();
  return pg;
}

TEST(DdpUnit, FirstBucketIsSmallThenBucketsCloseAtTheCap) {
  auto model = std::make_shared<Tower>();
  DdpOptions o;
  o.bucket_bytes = 3u << 20;  // 3 MiB
  DistributedDataParallel ddp(model, Group(), o);
  // Reverse order: params 11 (fc5.bias), 10 (fc5.weight), 9, 8, ... A bucket closes once it
  // reaches its cap, with the tensor that crossed it (PyTorch's rule).
  const auto layout = ddp.BucketLayout();
  ASSERT_EQ(layout.size(), 3u);
  EXPECT_EQ(layout[0], (std::vector<size_t>{11, 10}));  // 2 KiB + 1 MiB >= the 1 MiB first cap
  EXPECT_EQ(layout[1], (std::vector<size_t>{9, 8, 7, 6, 5, 4}));  // 3 MiB + 6 KiB
  EXPECT_EQ(layout[2], (std::vector<size_t>{3, 2, 1, 0}));
  EXPECT_EQ(ddp.Stats().buckets, 3);
}

TEST(DdpUnit, BucketsFollowTheObservedOrderAfterTheFirstStep) {
  // fc1 is computed after fc0 but used first in the loss: gradients arrive out of model order.
  torch::manual_seed(0);
  auto a = std::make_shared<torch::nn::LinearImpl>(8, 8);
  auto root = std::make_shared<torch::nn::Module>();
  root->register_module("a", a);
  auto b = root->register_module("b", std::make_shared<torch::nn::LinearImpl>(8, 8));
  DdpOptions o;
  o.first_bucket_bytes = o.bucket_bytes = 1;  // one tensor per bucket: the layout is the order
  DistributedDataParallel ddp(root, Group(), o);
  EXPECT_EQ(ddp.BucketLayout().front(), (std::vector<size_t>{3}));  // b.bias, by model order
  auto x = torch::randn({4, 8});
  // Only a's output feeds b's weight gradient late: loss = sum(a(x)) * 10 + sum(b(x)).
  auto loss = a->forward(x).sum() * 10 + b->forward(x).sum();
  loss.backward();
  EXPECT_EQ(ddp.Stats().steps, 1);
  std::vector<size_t> order;
  for (const auto& bucket : ddp.BucketLayout()) order.push_back(bucket.at(0));
  std::vector<size_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<size_t>{0, 1, 2, 3}));  // every parameter, once
}

TEST(DdpUnit, NoSyncSkipsCommunicationAndTheNextStepSyncs) {
  auto model = std::make_shared<Tower>();
  DistributedDataParallel ddp(model, Group());
  auto x = torch::randn({2, 512});
  {
    auto guard = ddp.NoSync();
    model->forward(x).sum().backward();
  }
  EXPECT_EQ(ddp.Stats().steps, 0);
  model->forward(x).sum().backward();
  const auto s = ddp.Stats();
  EXPECT_EQ(s.steps, 1);
  EXPECT_GT(s.total_comm_seconds, 0);
  EXPECT_GE(s.OverlapFraction(), 0.0);
  EXPECT_LE(s.OverlapFraction(), 1.0);
}

TEST(DdpUnit, BadInputIsOneClearError) {
  DdpOptions zero;
  zero.bucket_bytes = 0;
  EXPECT_THROW(DistributedDataParallel(std::make_shared<Tower>(), Group(), zero), InvalidArgument);
  EXPECT_THROW(DistributedDataParallel(std::shared_ptr<torch::nn::Module>(), Group()),
               InvalidArgument);
  EXPECT_THROW(DistributedDataParallel(std::make_shared<Tower>(), nullptr), InvalidArgument);
}

}  // namespace
}  // namespace cohort::runtime
