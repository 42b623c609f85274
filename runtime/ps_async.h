// Asynchronous parameter-server training (`--ps-mode async`): the parameter servers hold the
// model's parameters and run its optimizer (collectives/ps/async_*.h); each step a worker pushes
// its gradients and pulls fresh parameters instead of all-reducing gradients. ASP (staleness < 0:
// nobody waits) or SSP with bound s (a worker's pull after its step t waits until the slowest
// worker pushed step t - s; s = 0 is BSP). Pipelined (when asked, never with s = 0), a step's
// push overlaps the next step's forward and backward: Step returns once the previous step's
// answer is in the model, which then lacks this worker's last gradient, and the servers hold
// that answer until the bound allows the step it is used for, so the bound still holds. The
// optimizer given (torch::optim::SGD or Adam, one
// parameter group) supplies the options the servers apply and holds the state a snapshot saves:
// FetchState copies the servers' parameters and optimizer state into rank 0's model and
// optimizer, and Start pushes rank 0's (a resumed snapshot's) back. Used by the Trainer.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/process_group.h"
#include "runtime/torch_fwd.h"

namespace cohort::collectives::ps {
class AsyncClient;
struct AsyncOptimizerConfig;
struct AsyncState;
}  // namespace cohort::collectives::ps

namespace cohort::runtime {

class PsAsyncTraining {
 public:
  // Reads the servers from COHORT_PS_SERVERS (COHORT_PS_PARTITION_BYTES, COHORT_TOKEN) and the
  // call timeout from COHORT_TIMEOUT. Throws InvalidArgument for an optimizer other than SGD or
  // Adam (or amsgrad, or several parameter groups), parameters that are not contiguous CPU
  // float32, or no servers. Connects at Start.
  // pipeline: overlap each push with the next step (ignored with staleness 0). It can pay only
  // where the workers have cores to spare for it: on 2 shared cores, 0.99-1.06x for the CNN
  // and 0.94-0.99x for the 10M-parameter MLP at worlds 2 and 4 (scripts/bench-ddp --sides
  // cohort-ps-async,cohort-ps-async-pipe), hence off by default.
  PsAsyncTraining(std::shared_ptr<ProcessGroup> pg,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, int staleness,
                  bool pipeline = false);
  ~PsAsyncTraining();

  // Collective: rank 0 creates the job on the servers from its model and optimizer state with
  // every worker's clock at step; then every rank pulls the parameters into its model.
  void Start(int64_t step);
  bool Started() const { return client_ != nullptr; }
  // This rank's step: pushes the gradients (.grad; none counts as zero) and writes the
  // parameters the servers answer with into the model: those of this push, or pipelined, of
  // the previous one (none at the first step: the model stays as it is).
  void Step();
  // Pipelined: waits for the push out and writes its answer into the model (what PullFinal and
  // FetchState start with). Nothing to do otherwise.
  void Drain();
  bool Pipelined() const { return pipeline_; }
  // Collective, after the same step on every rank: every rank pulls the parameters (all equal).
  void PullFinal();
  // Collective, after the same step on every rank: rank 0's model and optimizer get the servers'
  // parameters and optimizer state (what a snapshot saves); nobody pushes meanwhile.
  void FetchState();

  // The staleness seen since the last call: the largest (fastest worker's clock - slowest's)
  // in this rank's answers (0 before any step).
  int64_t TakeMaxSpread();
  int Staleness() const { return staleness_; }

 private:
  // flat_ into the model's parameters, and back; the gradients (GradientRuns) into `to`.
  void CopyIntoModel();
  void CopyFromModel();
  void CopyGradients(float* to);
  // The model's parameters and gradients as the runs the servers' vector is held in (a
  // gradient that is none reads as zeros), so that a push reads and the answer writes them
  // in place. The gradients' runs stay valid until the next call.
  std::vector<std::pair<float*, size_t>> ModelRuns() const;
  std::vector<std::pair<const float*, size_t>> GradientRuns();
  // The answer to the push out, into the model.
  void Collect();
  // The torch optimizer's state of every parameter as the servers' slots (none if any lacks).
  collectives::ps::AsyncState LocalOptimizerState() const;

  std::shared_ptr<ProcessGroup> pg_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  const int staleness_;
  const bool pipeline_;
  std::unique_ptr<collectives::ps::AsyncOptimizerConfig> config_;
  std::vector<at::Tensor> params_;
  size_t numel_ = 0;
  std::vector<float> flat_;        // the parameters for Start, PullFinal and FetchState
  std::vector<float> grad_;        // pipelined: the gradients of the push out
  std::vector<at::Tensor> grads_;  // not pipelined: those of GradientRuns
  std::vector<float> zeros_;       // for a parameter without a gradient (the largest's size)
  // Last: destroyed (cancelling a push out) before the buffers it reads.
  std::unique_ptr<collectives::ps::AsyncClient> client_;
  int64_t next_step_ = 0;
  int64_t max_spread_ = 0;
};

}  // namespace cohort::runtime
