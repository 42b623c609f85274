#include "runtime/checkpointing.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/async_saver.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/host_buffer_pool.h"
#include "checkpoint/loader.h"
#include "checkpoint/store/object_store.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "runtime/train_state.h"

namespace cohort::runtime {

void CheckpointConfig::FillFromEnv() {
  if (uri.empty()) uri = env::kCheckpointUri.Str("");
  if (every == 0) every = env::kCheckpointEvery.Int(0);
  if (resume.empty()) resume = env::kResume.Str("");
  if (env::kCheckpointKeep.IsSet()) keep = static_cast<int>(env::kCheckpointKeep.Int(keep));
  if (run_id.empty()) run_id = env::kRunId.Str("default");
  if (every < 0) {
    throw InvalidArgument(fmt::format("checkpoint interval must be >= 0 steps, got {}", every));
  }
}

TrainingCheckpoints::TrainingCheckpoints(std::shared_ptr<ProcessGroup> pg,
                                         std::shared_ptr<torch::nn::Module> module,
                                         std::shared_ptr<torch::optim::Optimizer> optimizer,
                                         CheckpointConfig config)
    : pg_(std::move(pg)),
      module_(std::move(module)),
      optimizer_(std::move(optimizer)),
      config_(std::move(config)) {
  if (config_.run_id.empty()) config_.run_id = "default";
  if (!enabled()) return;
  std::shared_ptr<checkpoint::ObjectStore> store = checkpoint::OpenObjectStore(config_.uri);
  checkpoint::CheckpointOptions options;
  options.run = config_.run_id;
  options.rank = pg_->Rank();
  options.world_size = pg_->Size();
  options.keep = config_.keep;
  options.rendezvous = pg_->store();
  pool_ = std::make_unique<checkpoint::HostBufferPool>();
  saver_ = std::make_unique<checkpoint::AsyncSaver>(
      std::make_shared<checkpoint::Checkpointer>(std::move(store), options));
}

TrainingCheckpoints::~TrainingCheckpoints() = default;

int64_t TrainingCheckpoints::Resume(Trainer& trainer) {
  if (config_.resume.empty()) return -1;
  // Every rank reads and verifies every shard (the ones of other ranks are small: RNG and
  // sampler state), so all ranks see the same damage and fall back to the same snapshot.
  checkpoint::LoadOptions all;
  std::optional<checkpoint::LoadedSnapshot> snap;
  if (config_.resume == "latest") {
    if (!enabled()) {
      throw InvalidArgument(
          "--resume latest needs to know where snapshots are: pass --checkpoint-uri (or set "
          "COHORT_CHECKPOINT_URI)");
    }
    snap = checkpoint::LoadUri(
        config_.uri + (config_.uri.back() == '/' ? "" : "/") + config_.run_id, all);
    if (!snap) {
      COHORT_INFO(kCheckpoint, "no snapshot of run '{}' in {} yet: starting from step 0",
                  config_.run_id, config_.uri);
      return -1;
    }
  } else {
    snap = checkpoint::LoadUri(config_.resume, all);
    if (!snap) {
      throw DataLoss(
          fmt::format("--resume {}: no complete snapshot there; pass a snapshot URI "
                      "that `cohort checkpoint ls` lists, or latest",
                      config_.resume));
    }
  }
  for (const auto& w : snap->warnings) COHORT_WARN(kCheckpoint, "{}", w);
  const int saved_world = snap->manifest.world_size;
  const int rank = pg_->Rank();
  auto own = snap->shards.find(rank);
  const checkpoint::Shard* own_shard = own != snap->shards.end() ? &own->second : nullptr;
  TrainerState state = RestoreState(snap->shards.at(0), own_shard, *module_, *optimizer_);
  state.world = saved_world;
  trainer.Restore(state);
  last_saved_step_ = state.step;
  COHORT_INFO(kCheckpoint, "resumed from {} (step {}, epoch {}, saved by {} rank{})", snap->uri,
              state.step, state.epoch, saved_world, saved_world == 1 ? "" : "s");
  return state.step;
}

void TrainingCheckpoints::Attach(Trainer& trainer) {
  if (!enabled() || config_.every <= 0) return;
  trainer.OnStep([this](const TrainerState& state) {
    if (state.step % config_.every == 0) Save(state, /*wait=*/false);
  });
}

void TrainingCheckpoints::Save(const TrainerState& state, bool wait) {
  if (!enabled()) return;
  if (state.step != last_saved_step_) {
    // Phase one (training waits for it): the copy to host memory. Phase two runs behind.
    checkpoint::Shard shard =
        CaptureState(*module_, *optimizer_, state, pg_->Size(), pg_->Rank() == 0, pool_.get());
    saver_->Save(state.step, std::move(shard));
    last_saved_step_ = state.step;
  }
  if (wait) saver_->Wait();
}

void TrainingCheckpoints::SaveNow(const TrainerState& state) { Save(state, /*wait=*/true); }

void TrainingCheckpoints::Finish() {
  if (saver_) saver_->Finish();
}

}  // namespace cohort::runtime
