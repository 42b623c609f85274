// Pipeline: pipeline-parallel training. The model's layers are cut into stages, one per rank of
// the pp ProcessGroup (stage = rank in it); each step the batch is cut into m micro-batches along
// dim 0, activations flow forward and their gradients backward between neighbouring stages
// (runtime/pipeline_transport.h), in the order of a schedule (GPipe or 1F1B,
// runtime/pipeline_schedule.h). The loss is computed on the last stage.
//
//   torch::nn::Sequential model(...);  // the same seed on every rank: the same weights
//   auto pipe = Pipeline::Balanced(mesh->pp(), model.ptr(), {/*micro_batches=*/8});
//   torch::optim::SGD opt(pipe->Parameters(), 0.1);
//   opt.zero_grad();
//   double loss = pipe->Step(x, y, [](auto& out, auto& y) { return torch::mse_loss(out, y); });
//   opt.step();
//
// Gradients: micro-batch i's loss is weighted by rows_i / rows (1/m when m divides the batch),
// so the accumulated gradient is the gradient of the whole batch's mean loss, as in one process.
// Data parallel: give each stage a DistributedDataParallel over its dp group (SetDataParallel);
// backward runs under NoSync for every micro-batch but the last, so the stage's gradients are
// all-reduced once per step, overlapping the last backward.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/ddp.h"
#include "runtime/pipeline_schedule.h"
#include "runtime/process_group.h"
#include "runtime/torch_fwd.h"

namespace torch::nn {
class SequentialImpl;
}  // namespace torch::nn

namespace cohort::runtime {

class PipelineTransport;
struct ActivationHeader;

struct PipelineOptions {
  int micro_batches = 1;
  PipelineSchedule schedule = PipelineSchedule::k1F1B;
  // This stage's input row shape (the dims after the batch dim), when declared: the previous
  // stage's header is checked against it and a mismatch names both stages. Empty: not checked.
  std::vector<int64_t> input_row_shape;
};

// Measured in the last Step.
struct PipelineStats {
  int64_t steps = 0;
  double step_seconds = 0;     // from Step's entry until the loss is known on every stage
  double compute_seconds = 0;  // of it, in this stage's forward, loss and backward passes
  // The rest of the step: waiting for neighbours (the bubble) and communication.
  double IdleFraction() const;
  // Bytes of the stage's inputs and outputs kept alive for backward at once, at the peak, and
  // how many micro-batches they belonged to.
  int64_t peak_activation_bytes = 0;
  int peak_in_flight = 0;
};

class Pipeline {
 public:
  // The forward of this rank's stage.
  using StageFn = std::function<at::Tensor(const at::Tensor& input)>;
  // The loss (a scalar with a graph) of the last stage's output on a micro-batch's target.
  using LossFn = std::function<at::Tensor(const at::Tensor& output, const at::Tensor& target)>;

  // This rank's stage: the module that holds its parameters and its forward. Throws
  // InvalidArgument for a null group or module, an empty forward or bad options.
  Pipeline(std::shared_ptr<ProcessGroup> pp, std::shared_ptr<torch::nn::Module> stage,
           StageFn forward, PipelineOptions options);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // This rank's stage of model: layers [boundaries[stage - 1], boundaries[stage]) (the first
  // stage from 0, the last to the end). The stage shares the layers with model and keeps their
  // names ("3.weight"). Throws InvalidArgument for boundaries that do not cut the model into
  // pp->Size() non-empty stages.
  static std::unique_ptr<Pipeline> FromSequential(
      std::shared_ptr<ProcessGroup> pp, const std::shared_ptr<torch::nn::SequentialImpl>& model,
      const std::vector<int>& boundaries, PipelineOptions options);
  // As FromSequential, with boundaries that balance the stages' parameter counts.
  static std::unique_ptr<Pipeline> Balanced(std::shared_ptr<ProcessGroup> pp,
                                            const std::shared_ptr<torch::nn::SequentialImpl>& model,
                                            PipelineOptions options);

  // Gives the stage a DistributedDataParallel built around module() over its dp group (or null).
  void SetDataParallel(std::shared_ptr<DistributedDataParallel> ddp);

  // One step's forwards and backwards of every micro-batch, in the schedule's order; gradients
  // accumulate into the stage's .grad (zero them before, step the optimizer after). input is
  // read on the first stage, target on the last (either may be undefined elsewhere). Returns
  // the batch's mean loss on every stage. Throws InvalidArgument for bad input, and, naming the
  // stages involved, what the communication or a stage's forward throws.
  double Step(const at::Tensor& input, const at::Tensor& target, const LossFn& loss);

  int stage() const;
  int stages() const;
  const PipelineOptions& options() const { return options_; }
  // Changes the micro-batch count or schedule for later steps (every stage must do the same).
  void SetOptions(PipelineOptions options);
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }
  // The stage's layers in the whole model, [first, end); (0, 0) for a module given per rank.
  std::pair<int, int> Layers() const { return layers_; }
  // The stage's parameters under their names in the whole model ("3.weight").
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() const;
  std::vector<at::Tensor> Parameters() const;
  PipelineStats Stats() const { return stats_; }

 private:
  struct StepState;
  void CheckOptions() const;
  void RunForward(StepState& s, int micro);
  void RunBackward(StepState& s, int micro);
  void ReceiveInput(StepState& s, int micro);
  at::Tensor Forward(StepState& s, const at::Tensor& x, int micro);
  void SendOutput(StepState& s, const at::Tensor& out, int micro);
  void CheckHeader(const ActivationHeader& h) const;
  std::string Name() const;

  std::shared_ptr<ProcessGroup> pp_;
  std::unique_ptr<PipelineTransport> transport_;
  std::shared_ptr<torch::nn::Module> module_;
  StageFn forward_;
  PipelineOptions options_;
  std::shared_ptr<DistributedDataParallel> ddp_;
  std::pair<int, int> layers_{0, 0};
  PipelineStats stats_;
};

}  // namespace cohort::runtime
