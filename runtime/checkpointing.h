// Checkpoints for the Trainer: saves a snapshot every N steps (asynchronously: training waits
// only for the copy to host memory), saves one at the end and when the job is asked to stop
// (SIGTERM), and resumes from `latest` or a given snapshot. A data-parallel job's snapshots
// resume at any world size. A model-parallel job passes its ShardedCheckpointLayout: each rank
// then saves the slices it owns (checkpoint/layout.h) and resumes at any other dp x pp x tp
// layout, reading only the slices it needs. The launcher sets COHORT_CHECKPOINT_URI and, on a
// restart, COHORT_RESUME=latest.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/layout.h"
#include "runtime/process_group.h"
#include "runtime/sharded_state.h"
#include "runtime/torch_fwd.h"
#include "runtime/trainer.h"

namespace cohort::checkpoint {
class AsyncSaver;
class HostBufferPool;
}  // namespace cohort::checkpoint

namespace cohort::runtime {

struct CheckpointConfig {
  std::string uri;     // file:///dir, s3://bucket/prefix, memory://name; empty: no checkpoints
  int64_t every = 0;   // steps between snapshots; 0: only at the end and on a stop request
  std::string resume;  // "latest", a snapshot URI, or empty (start fresh)
  int keep = 3;        // complete snapshots kept (0: all)
  std::string run_id;  // the snapshots' folder under uri; empty: COHORT_RUN_ID, else "default"
  // Fills what is unset from COHORT_CHECKPOINT_URI, COHORT_CHECKPOINT_EVERY, COHORT_RESUME,
  // COHORT_CHECKPOINT_KEEP and COHORT_RUN_ID.
  void FillFromEnv();
};

// How a model-parallel rank's state is cut. The module's parameters must carry their names in
// the whole (unsharded) model, as examples/gpt's stages do, so that names match across layouts.
struct ShardedCheckpointLayout {
  checkpoint::MeshSizes mesh;            // of the job that saves
  std::vector<ParamSharding> shardings;  // this rank's sliced parameters (others are whole)
  bool saves_model = true;               // false on dp replicas > 0: they save only their RNG
};

class TrainingCheckpoints {
 public:
  // pg: the whole job (every rank saves a shard). sharded: nullopt for a data-parallel job.
  TrainingCheckpoints(std::shared_ptr<ProcessGroup> pg, std::shared_ptr<torch::nn::Module> module,
                      std::shared_ptr<torch::optim::Optimizer> optimizer, CheckpointConfig config,
                      std::optional<ShardedCheckpointLayout> sharded = std::nullopt);
  ~TrainingCheckpoints();

  bool enabled() const { return !config_.uri.empty(); }
  // Loads the snapshot config.resume names into the model, the optimizer and the trainer.
  // Returns the step resumed from, or -1 when there was nothing to resume ("latest" on a new
  // run). Throws DataLoss when a named snapshot is missing or every complete one is corrupt.
  // Sharded: a damaged snapshot (a block whose digest differs, a truncated shard) makes every
  // rank fall back together to the next older complete one, as data-parallel loads do; a
  // layout that cannot map (another global shape, a missing tensor) throws InvalidArgument.
  int64_t Resume(Trainer& trainer);
  // Saves every config.every steps from the trainer's step hook. In ps async mode each save
  // first fetches the servers' parameters and optimizer state (Trainer::FetchServerState).
  void Attach(Trainer& trainer);
  // Saves the state now and waits until the snapshot is complete (end of training, SIGTERM).
  // Skipped when the last snapshot is already of this step. Throws a failed earlier save.
  void SaveNow(const TrainerState& state);
  // Waits for the save in flight; throws if any save failed.
  void Finish();

 private:
  void Save(const TrainerState& state, bool wait);
  std::string ResumeUri() const;  // what config.resume names ("latest": the run's folder)
  std::optional<TrainerState> ResumeDataParallel();
  std::optional<TrainerState> ResumeSharded();
  // Restores from one sharded snapshot; every rank learns whether every rank succeeded.
  bool TryShardedSnapshot(const checkpoint::RunDir& run, const std::string& name,
                          TrainerState* state);

  std::shared_ptr<ProcessGroup> pg_;
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  CheckpointConfig config_;
  std::optional<ShardedCheckpointLayout> sharded_;
  std::unique_ptr<checkpoint::HostBufferPool> pool_;  // warm buffers for phase one
  std::unique_ptr<checkpoint::AsyncSaver> saver_;
  int64_t last_saved_step_ = -1;
  Trainer* trainer_ = nullptr;  // Attach's, for FetchServerState
};

}  // namespace cohort::runtime
