// Asynchronous parameter-server training (`--ps-mode async`): the parameter servers hold the
// model's parameters and run its optimizer (collectives/ps/async_*.h); each step a worker pushes
// its gradients and pulls fresh parameters instead of all-reducing gradients. ASP (staleness < 0:
// nobody waits) or SSP with bound s (a worker's pull after its step t waits until the slowest
// worker pushed step t - s; s = 0 is BSP). The optimizer given (torch::optim::SGD or Adam, one
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
  PsAsyncTraining(std::shared_ptr<ProcessGroup> pg,
                  std::shared_ptr<torch::optim::Optimizer> optimizer, int staleness);
  ~PsAsyncTraining();

  // Collective: rank 0 creates the job on the servers from its model and optimizer state with
  // every worker's clock at step; then every rank pulls the parameters into its model.
  void Start(int64_t step);
  bool Started() const { return client_ != nullptr; }
  // This rank's step: pushes the gradients (.grad; none counts as zero) and writes the
  // parameters the servers answer with into the model.
  void Step();
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
  void CopyIntoModel();
  void CopyFromModel();
  // The torch optimizer's state of every parameter as the servers' slots (none if any lacks).
  collectives::ps::AsyncState LocalOptimizerState() const;

  std::shared_ptr<ProcessGroup> pg_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  const int staleness_;
  std::unique_ptr<collectives::ps::AsyncOptimizerConfig> config_;
  std::vector<at::Tensor> params_;
  size_t numel_ = 0;
  std::vector<float> flat_;  // parameters, then reused for gradients
  std::unique_ptr<collectives::ps::AsyncClient> client_;
  int64_t next_step_ = 0;
  int64_t max_spread_ = 0;
};

}  // namespace cohort::runtime
