// Trainer: the training loop for the common case. Each epoch it shuffles the dataset with a
// DistributedSampler, and each step it asks the task for the loss of this rank's batch, runs
// backward (DDP averages the gradients) and the optimizer step. Rank 0 prints a progress line
// (epoch, step, samples/s, loss, ETA, and the straggler when one rank is over 1.2x the median
// compute time per step) that refreshes in place on a terminal and prints plainly into logs,
// and writes metrics to its sinks (JSON lines, MLflow; runtime/metrics.h). At the end rank 0
// logs each rank's compute time per step. Every step beats the launcher's heartbeat
// (collectives/heartbeat.h). Checkpoints plug in through the hooks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/ddp.h"
#include "runtime/metrics.h"
#include "runtime/process_group.h"
#include "runtime/sampler.h"
#include "runtime/torch_fwd.h"

namespace cohort::runtime {

struct TrainerOptions {
  int epochs = 1;
  size_t batch_size = 64;  // per worker
  uint64_t seed = 0;       // sampler shuffle (and the task's own randomness, if it wants)
  bool drop_last = false;
  int64_t max_steps = -1;    // stop after this many steps in total (-1: run every epoch)
  std::string metrics_path;  // JSON lines on rank 0; empty: none
  // Seconds between reports: progress lines in logs (a tty refreshes every 0.2 s), metrics
  // records, and the ranks' exchange of their losses (one tiny all-reduce). 0: every step.
  double progress_interval = 1.0;
  bool progress = true;  // rank 0 prints progress
  // Which share of the dataset this rank reads, when that is not its place in the process
  // group: the pipeline stages (or tensor-parallel ranks) of one model replica read the same
  // batches, so they pass the replica's data-parallel rank and the number of replicas. -1: the
  // process group's rank and size. Samples and samples/s count replicas, not ranks.
  int data_rank = -1;
  int data_ranks = -1;
  // "async": the parameter servers (COHORT_PS_SERVERS) hold the parameters and run the
  // optimizer's maths (SGD or Adam); each step pushes the gradients and pulls the parameters
  // (runtime/ps_async.h); pass ddp null. "" or "sync": ddp averages the gradients.
  std::string ps_mode;
  int staleness = -1;  // async: SSP's bound (a worker at most this many steps ahead); < 0: ASP
  // async: each step's push overlaps the next step, which uses the parameters one push older
  // (PsAsyncTraining; never with staleness 0).
  bool ps_pipeline = false;
};

// Where the loop stands; what a checkpoint saves besides model and optimizer.
struct TrainerState {
  int64_t epoch = 0;
  int64_t step = 0;  // optimizer steps taken in total
  SamplerState sampler;
  int world = 1;  // ranks when saved: Restore maps the sampler position onto today's world
  // The tracking (MLflow) run this training logs to, so that a resumed job continues it.
  std::string tracking_run_id;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t samples = 0;  // examples processed on all ranks together
  double seconds = 0;
  double samples_per_second = 0;
  double last_loss = 0;  // mean over ranks of the last step's loss
};

class Trainer {
 public:
  // Returns the loss (a scalar tensor with a graph to run backward on) of the model on the
  // examples with these indices. Called once per step on every rank.
  using LossFn = std::function<at::Tensor(const std::vector<size_t>& indices)>;
  // A whole training step on the examples with these indices (e.g. zero_grad, a pipeline
  // schedule, the optimizer step); returns the step's loss. Called once per step on every rank.
  using StepFn = std::function<double(const std::vector<size_t>& indices)>;
  // Called after every optimizer step with the state after it.
  using StepHook = std::function<void(const TrainerState& state)>;

  // ddp may be null (a model kept in step some other way, or one process); the loop itself only
  // reads its statistics. Throws InvalidArgument for a null pg or optimizer, batch_size 0,
  // epochs < 0, max_steps < -1 or a data_rank outside [0, data_ranks).
  Trainer(std::shared_ptr<ProcessGroup> pg, std::shared_ptr<DistributedDataParallel> ddp,
          std::shared_ptr<torch::optim::Optimizer> optimizer, TrainerOptions options);
  ~Trainer();

  // Trains over a dataset of dataset_size examples. Resumes from State() (set by Restore).
  TrainResult Fit(size_t dataset_size, const LossFn& loss);
  // Trains with a step of the caller's own in place of loss, backward and optimizer step;
  // progress, metrics, heartbeats, RequestStop and the step hooks work as with a LossFn.
  TrainResult Fit(size_t dataset_size, const StepFn& step);

  void OnStep(StepHook hook);
  // Rank 0 writes every report (progress_interval) to sink as well as to metrics_path.
  void AddMetricsSink(std::shared_ptr<MetricsSink> sink);
  // Where State().tracking_run_id comes from (read after each step; "" keeps the last value),
  // so that snapshots carry the tracking run a resumed job continues.
  void SetTrackingRun(std::function<std::string()> run_id);
  // Asks the loop to stop after the current step (e.g. from a SIGTERM handler); Fit returns.
  // In a world of one that is the current step. With more ranks, all of them must stop after
  // the same step: the request travels with the loss at the next report (at most about one
  // progress_interval later) and every rank stops after that step. Async-signal-safe.
  void RequestStop();
  TrainerState State() const;
  void Restore(const TrainerState& state);
  // ps async mode: collective, after the same step on every rank; rank 0's model and optimizer
  // then hold the servers' parameters and optimizer state (what a snapshot saves). Otherwise a
  // no-op.
  void FetchServerState();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::runtime
