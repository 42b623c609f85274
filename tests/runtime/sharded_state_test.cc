// runtime/sharded_state: a Linear cut by rows onto two tensor-parallel ranks (threads), trained
// one Adam step on slices of the full gradient, saved sharded, then restored whole at tp 1:
// parameters and optimizer state equal the ranks' slices put together, bit-exact.
#include "runtime/sharded_state.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "checkpoint/checkpointer.h"
#include "checkpoint/layout.h"
#include "checkpoint/reshard.h"
#include "collectives/store/memory_store.h"
#include "common/error.h"

namespace cohort::runtime {
namespace {

TEST(ShardedState, Tp2SaveRestoresAtTp1BitExact) {
  torch::manual_seed(3);
  torch::nn::Linear full(6, 4);
  const auto grad_w = torch::randn({4, 6}), grad_b = torch::randn({4});
  auto store = std::shared_ptr<checkpoint::ObjectStore>(
      checkpoint::OpenObjectStore("memory://sharded-state-test"));
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  std::vector<torch::Tensor> weights(2), avgs(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      torch::nn::Linear local(6, 2);
      torch::NoGradGuard no_grad;
      local->weight.copy_(full->weight.slice(0, 2 * r, 2 * r + 2));
      local->bias.copy_(full->bias.slice(0, 2 * r, 2 * r + 2));
      torch::optim::Adam opt(local->parameters(), torch::optim::AdamOptions(0.1));
      local->weight.mutable_grad() = grad_w.slice(0, 2 * r, 2 * r + 2).clone();
      local->bias.mutable_grad() = grad_b.slice(0, 2 * r, 2 * r + 2).clone();
      opt.step();
      std::vector<ParamSharding> sh = {{"weight", {4, 6}, {2 * r, 0}}, {"bias", {4}, {2 * r}}};
      TrainerState state;
      state.step = 1;
      checkpoint::CheckpointOptions o;
      o.rank = r;
      o.world_size = 2;
      o.rendezvous = rdzv;
      o.layout = checkpoint::ShardedLayoutSpec({1, 1, 2});
      checkpoint::Checkpointer(store, o).Save(CaptureShardedState(*local, opt, state, sh, true));
      weights[r] = local->weight.clone();
      const auto& s = static_cast<torch::optim::AdamParamState&>(
          *opt.state().at(c10::guts::to_string(local->weight.unsafeGetTensorImpl())));
      avgs[r] = s.exp_avg().clone();
    });
  }
  for (auto& t : threads) t.join();

  checkpoint::ShardedReader reader(checkpoint::RunDir::Of(*store, ""), "step-000000000001");
  torch::nn::Linear whole(6, 4);
  torch::optim::Adam opt(whole->parameters(), torch::optim::AdamOptions(0.1));
  const TrainerState state = RestoreShardedState(reader, 0, *whole, opt, {});
  EXPECT_EQ(state.step, 1);
  EXPECT_TRUE(torch::equal(whole->weight, torch::cat(weights)));
  const auto& s = static_cast<torch::optim::AdamParamState&>(
      *opt.state().at(c10::guts::to_string(whole->weight.unsafeGetTensorImpl())));
  EXPECT_TRUE(torch::equal(s.exp_avg(), torch::cat(avgs)));
  EXPECT_EQ(s.step(), 1);

  torch::nn::Linear wider(7, 4);
  torch::optim::Adam opt2(wider->parameters());
  try {
    RestoreShardedState(reader, 0, *wider, opt2, {});
    FAIL() << "restored into another shape";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "checkpoint: tensor model/weight has global shape [4, 6] (f32) in "
                 "step-000000000001 but the model wants [4, 7] (f32); "
                 "resume with the model it was saved from");
  }
}

}  // namespace
}  // namespace cohort::runtime
