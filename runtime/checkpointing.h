// Checkpoints for the Trainer: saves a snapshot every N steps (asynchronously: training waits
// only for the copy to host memory), saves one at the end and when the job is asked to stop
// (SIGTERM), and resumes from `latest` or a given snapshot, at any world size (data parallel).
// The launcher sets COHORT_CHECKPOINT_URI and, on a restart, COHORT_RESUME=latest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/process_group.h"
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

class TrainingCheckpoints {
 public:
  TrainingCheckpoints(std::shared_ptr<ProcessGroup> pg, std::shared_ptr<torch::nn::Module> module,
                      std::shared_ptr<torch::optim::Optimizer> optimizer, CheckpointConfig config);
  ~TrainingCheckpoints();

  bool enabled() const { return !config_.uri.empty(); }
  // Loads the snapshot config.resume names into the model, the optimizer and the trainer.
  // Returns the step resumed from, or -1 when there was nothing to resume ("latest" on a new
  // run). Throws DataLoss when a named snapshot is missing or every complete one is corrupt.
  int64_t Resume(Trainer& trainer);
  // Saves every config.every steps from the trainer's step hook.
  void Attach(Trainer& trainer);
  // Saves the state now and waits until the snapshot is complete (end of training, SIGTERM).
  // Skipped when the last snapshot is already of this step. Throws a failed earlier save.
  void SaveNow(const TrainerState& state);
  // Waits for the save in flight; throws if any save failed.
  void Finish();

 private:
  void Save(const TrainerState& state, bool wait);

  std::shared_ptr<ProcessGroup> pg_;
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  CheckpointConfig config_;
  std::unique_ptr<checkpoint::HostBufferPool> pool_;  // warm buffers for phase one
  std::unique_ptr<checkpoint::AsyncSaver> saver_;
  int64_t last_saved_step_ = -1;
};

}  // namespace cohort::runtime
