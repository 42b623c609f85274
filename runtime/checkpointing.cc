#include "runtime/checkpointing.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/async_saver.h"
#include "checkpoint/catalog.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/host_buffer_pool.h"
#include "checkpoint/loader.h"
#include "checkpoint/reshard.h"
#include "checkpoint/store/object_store.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timeline.h"
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
                                         CheckpointConfig config,
                                         std::optional<ShardedCheckpointLayout> sharded)
    : pg_(std::move(pg)),
      module_(std::move(module)),
      optimizer_(std::move(optimizer)),
      config_(std::move(config)),
      sharded_(std::move(sharded)) {
  if (config_.run_id.empty()) config_.run_id = "default";
  if (!enabled()) return;
  std::shared_ptr<checkpoint::ObjectStore> store = checkpoint::OpenObjectStore(config_.uri);
  checkpoint::CheckpointOptions options;
  options.run = config_.run_id;
  options.rank = pg_->Rank();
  options.world_size = pg_->Size();
  options.keep = config_.keep;
  options.rendezvous = pg_->store();
  if (sharded_) {
    if (sharded_->mesh.Ranks() != pg_->Size()) {
      throw InvalidArgument(
          fmt::format("sharded checkpoints: mesh dp {} x pp {} x tp {} is {} "
                      "ranks, but the job has {}",
                      sharded_->mesh.dp, sharded_->mesh.pp, sharded_->mesh.tp,
                      sharded_->mesh.Ranks(), pg_->Size()));
    }
    options.layout = checkpoint::ShardedLayoutSpec(sharded_->mesh);
  }
  pool_ = std::make_unique<checkpoint::HostBufferPool>();
  saver_ = std::make_unique<checkpoint::AsyncSaver>(
      std::make_shared<checkpoint::Checkpointer>(std::move(store), options));
}

TrainingCheckpoints::~TrainingCheckpoints() = default;

int64_t TrainingCheckpoints::Resume(Trainer& trainer) {
  if (config_.resume.empty()) return -1;
  if (config_.resume == "latest" && !enabled()) {
    throw InvalidArgument(
        "--resume latest needs to know where snapshots are: pass --checkpoint-uri (or set "
        "COHORT_CHECKPOINT_URI)");
  }
  const std::optional<TrainerState> state = sharded_ ? ResumeSharded() : ResumeDataParallel();
  if (!state) {
    COHORT_INFO(kCheckpoint, "no snapshot of run '{}' in {} yet: starting from step 0",
                config_.run_id, config_.uri);
    return -1;
  }
  trainer.Restore(*state);
  last_saved_step_ = state->step;
  return state->step;
}

std::string TrainingCheckpoints::ResumeUri() const {
  if (config_.resume != "latest") return config_.resume;
  return config_.uri + (config_.uri.back() == '/' ? "" : "/") + config_.run_id;
}

std::optional<TrainerState> TrainingCheckpoints::ResumeDataParallel() {
  // Every rank reads and verifies every shard (the ones of other ranks are small: RNG and
  // sampler state), so all ranks see the same damage and fall back to the same snapshot.
  checkpoint::LoadOptions all;
  std::optional<checkpoint::LoadedSnapshot> snap = checkpoint::LoadUri(ResumeUri(), all);
  if (!snap) {
    if (config_.resume == "latest") return std::nullopt;
    throw DataLoss(
        fmt::format("--resume {}: no complete snapshot there; pass a snapshot URI "
                    "that `cohort checkpoint ls` lists, or latest",
                    config_.resume));
  }
  for (const auto& w : snap->warnings) COHORT_WARN(kCheckpoint, "{}", w);
  const int saved_world = snap->manifest.world_size;
  const int rank = pg_->Rank();
  auto own = snap->shards.find(rank);
  const checkpoint::Shard* own_shard = own != snap->shards.end() ? &own->second : nullptr;
  TrainerState state = RestoreState(snap->shards.at(0), own_shard, *module_, *optimizer_);
  state.world = saved_world;
  COHORT_INFO(kCheckpoint, "resumed from {} (step {}, epoch {}, saved by {} rank{})", snap->uri,
              state.step, state.epoch, saved_world, saved_world == 1 ? "" : "s");
  return state;
}

std::optional<TrainerState> TrainingCheckpoints::ResumeSharded() {
  // Each rank reads only the blocks its slices need, so ranks see different damage: after each
  // candidate they agree (one all-reduce) whether every rank restored it, and fall back to the
  // next older complete snapshot together. A snapshot named outright has no fallback.
  const checkpoint::Location loc = checkpoint::ResolveUri(ResumeUri());
  const checkpoint::RunDir run = loc.run();
  std::string latest_warning;
  const std::vector<std::string> candidates =
      loc.snapshot ? std::vector<std::string>{*loc.snapshot}
                   : checkpoint::ResumeCandidates(run, &latest_warning);
  if (!latest_warning.empty()) COHORT_WARN(kCheckpoint, "{}", latest_warning);
  if (candidates.empty() && config_.resume == "latest") return std::nullopt;
  for (const std::string& name : candidates) {
    TrainerState state;
    if (TryShardedSnapshot(run, name, &state)) return state;
  }
  throw DataLoss(fmt::format(
      "--resume {}: {}; pass a snapshot URI that `cohort checkpoint ls` lists as ok",
      config_.resume,
      candidates.empty()
          ? "no complete snapshot there"
          : fmt::format("every complete snapshot there ({}) is damaged", candidates.size())));
}

bool TrainingCheckpoints::TryShardedSnapshot(const checkpoint::RunDir& run, const std::string& name,
                                             TrainerState* state) {
  // 0: restored; 1: damaged (DataLoss: try an older one); 2: cannot map or failed otherwise.
  double outcome = 0;
  std::exception_ptr error;
  std::string why;
  uint64_t bytes = 0;
  try {
    checkpoint::ShardedReader reader(run, name);
    *state = RestoreShardedState(reader, pg_->Rank(), *module_, *optimizer_, sharded_->shardings);
    bytes = reader.bytes_read();
  } catch (const DataLoss& e) {
    outcome = 1;
    why = e.what();
  } catch (...) {
    outcome = 2;
    error = std::current_exception();
  }
  if (pg_->Size() > 1) {
    pg_->comm()
        .AllReduce(collectives::TensorView(&outcome, 1, collectives::DType::kFloat64),
                   collectives::ReduceOp::kMax)
        ->Wait();
  }
  if (outcome == 0) {
    COHORT_INFO(kCheckpoint, "resumed from {} (step {}, epoch {}; read {} bytes of it)",
                run.Uri(name), state->step, state->epoch, bytes);
    return true;
  }
  if (error) std::rethrow_exception(error);
  if (outcome == 2) {
    throw InvalidArgument(
        fmt::format("resume from {} failed on another rank (its log says why)", run.Uri(name)));
  }
  COHORT_WARN(kCheckpoint, "{} is damaged{}{}: trying the next older snapshot", run.Uri(name),
              why.empty() ? "" : ": ", why);
  return false;
}

void TrainingCheckpoints::Attach(Trainer& trainer) {
  trainer_ = &trainer;
  if (!enabled() || config_.every <= 0) return;
  trainer.OnStep([this](const TrainerState& state) {
    if (state.step % config_.every == 0) Save(state, /*wait=*/false);
  });
}

void TrainingCheckpoints::Save(const TrainerState& state, bool wait) {
  if (!enabled()) return;
  if (state.step != last_saved_step_) {
    // Phase one (training waits for it): the copy to host memory. Phase two runs behind.
    timeline::Span span("checkpoint capture", "checkpoint");
    if (trainer_) trainer_->FetchServerState();  // ps async: the servers hold the state
    checkpoint::Shard shard =
        sharded_ ? CaptureShardedState(*module_, *optimizer_, state, sharded_->shardings,
                                       sharded_->saves_model, pool_.get())
                 : CaptureState(*module_, *optimizer_, state, pg_->Size(), pg_->Rank() == 0,
                                pool_.get());
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
