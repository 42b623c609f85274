// The schedule runner. Each step walks this stage's action list (pipeline_schedule.h); a forward
// receives its input from the previous stage (the first one of a step after the header), runs
// the stage and queues its output for the next stage; a backward receives the output's gradient
// from the next stage (on the last stage: the micro-batch's weighted loss), runs autograd and
// queues the input's gradient for the previous stage. Queued sends go out with the next receive
// (PipelineTransport), so neighbours never wait on each other in a cycle.
#include "runtime/pipeline.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor_split.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/modules/container/sequential.h>

#include <chrono>
#include <optional>

#include "common/error.h"
#include "runtime/pipeline_transport.h"

namespace cohort::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string Describe(const at::Tensor& t) {
  return fmt::format("[{}] {}", fmt::join(t.sizes(), ", "), c10::toString(t.scalar_type()));
}

// A torch error's message without its backtrace, on one line.
std::string FirstLine(const std::string& text) {
  const size_t end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

}  // namespace

double PipelineStats::IdleFraction() const {
  return step_seconds > 0 ? 1.0 - compute_seconds / step_seconds : 0.0;
}

// What one step keeps per micro-batch until its backward, and its measurements.
struct Pipeline::StepState {
  int m = 0;
  int64_t batch = 0;
  std::vector<int64_t> rows;
  ActivationHeader in_header, out_header;
  std::vector<at::Tensor> inputs, outputs, losses, targets;
  const at::Tensor* target = nullptr;
  const LossFn* loss = nullptr;
  at::Tensor loss_sum;
  int64_t held_bytes = 0, peak_bytes = 0;
  int in_flight = 0, peak_in_flight = 0;
  double compute = 0;
};

Pipeline::Pipeline(std::shared_ptr<ProcessGroup> pp, std::shared_ptr<torch::nn::Module> stage,
                   StageFn forward, PipelineOptions options)
    : pp_(std::move(pp)),
      module_(std::move(stage)),
      forward_(std::move(forward)),
      options_(std::move(options)) {
  if (!pp_) throw InvalidArgument("pipeline: the pp process group is null");
  if (!module_) throw InvalidArgument("pipeline: the stage module is null");
  if (!forward_) throw InvalidArgument("pipeline: the stage's forward function is empty");
  transport_ = std::make_unique<PipelineTransport>(pp_);
  CheckOptions();
}

Pipeline::~Pipeline() = default;

void Pipeline::CheckOptions() const {
  if (options_.micro_batches < 1) {
    throw InvalidArgument(
        fmt::format("pipeline: micro_batches is {}; pass 1 or more", options_.micro_batches));
  }
}

std::unique_ptr<Pipeline> Pipeline::FromSequential(
    std::shared_ptr<ProcessGroup> pp, const std::shared_ptr<torch::nn::SequentialImpl>& model,
    const std::vector<int>& boundaries, PipelineOptions options) {
  if (!pp) throw InvalidArgument("pipeline: the pp process group is null");
  if (!model) throw InvalidArgument("pipeline: the model is null");
  const int layers = static_cast<int>(model->size());
  CheckBoundaries(boundaries, layers, pp->Size());
  const int s = pp->Rank();
  const int first = s == 0 ? 0 : boundaries[s - 1];
  const int end = s + 1 == pp->Size() ? layers : boundaries[s];
  auto stage = std::make_shared<torch::nn::SequentialImpl>();
  const auto children = model->named_children();
  for (int i = first; i < end; ++i) {
    // The stage shares layer i (AnyModule copies hold the same module) under its global name.
    stage->push_back(children[i].key(), *(model->begin() + i));
  }
  auto forward = [stage](const at::Tensor& x) { return stage->forward(x); };
  auto pipe = std::make_unique<Pipeline>(std::move(pp), stage, forward, std::move(options));
  pipe->layers_ = {first, end};
  return pipe;
}

std::unique_ptr<Pipeline> Pipeline::Balanced(
    std::shared_ptr<ProcessGroup> pp, const std::shared_ptr<torch::nn::SequentialImpl>& model,
    PipelineOptions options) {
  if (!pp) throw InvalidArgument("pipeline: the pp process group is null");
  if (!model) throw InvalidArgument("pipeline: the model is null");
  std::vector<int64_t> params;
  for (const auto& child : model->children()) {
    int64_t n = 0;
    for (const auto& p : child->parameters()) n += p.numel();
    params.push_back(n);
  }
  return FromSequential(pp, model, BalancedBoundaries(params, pp->Size()), std::move(options));
}

void Pipeline::SetDataParallel(std::shared_ptr<DistributedDataParallel> ddp) {
  ddp_ = std::move(ddp);
}

void Pipeline::SetOptions(PipelineOptions options) {
  std::swap(options_, options);
  try {
    CheckOptions();
  } catch (...) {
    std::swap(options_, options);
    throw;
  }
}

int Pipeline::stage() const { return pp_->Rank(); }
int Pipeline::stages() const { return pp_->Size(); }

std::string Pipeline::Name() const { return "pipeline " + transport_->StageName(stage()); }

std::vector<std::pair<std::string, at::Tensor>> Pipeline::NamedParameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    out.emplace_back(item.key(), item.value());
  }
  return out;
}

std::vector<at::Tensor> Pipeline::Parameters() const { return module_->parameters(); }

double Pipeline::Step(const at::Tensor& input, const at::Tensor& target, const LossFn& loss) {
  if (!loss && stage() + 1 == stages()) {
    throw InvalidArgument(Name() + ": the loss function is empty");
  }
  const Clock::time_point begin = Clock::now();
  StepState s;
  s.m = options_.micro_batches;
  s.target = &target;
  s.loss = &loss;
  s.inputs.resize(s.m);
  s.outputs.resize(s.m);
  s.losses.resize(s.m);
  double mean_loss = 0;
  try {
    if (stage() == 0) {
      if (!input.defined() || input.dim() < 1) {
        throw InvalidArgument(Name() + ": the input batch is undefined or a scalar; pass the " +
                              "batch (rows along dim 0) to Step on the first stage");
      }
      s.batch = input.size(0);
      s.rows = MicroBatchSizes(s.batch, s.m);
      s.inputs = at::tensor_split(input, s.m, 0);
    }
    for (const PipelineAction& a :
         MakePipelineSchedule(options_.schedule, stages(), stage(), s.m)) {
      if (a.kind == PipelineAction::kForward) {
        RunForward(s, a.micro);
      } else {
        RunBackward(s, a.micro);
      }
    }
    transport_->Flush();
    const bool last = stage() + 1 == stages();
    mean_loss = transport_->AllReduce(last ? s.loss_sum.item<double>() : 0.0);
  } catch (const std::exception& e) {
    transport_->Fail(e.what());
    throw;
  }
  ++stats_.steps;
  stats_.step_seconds = SecondsSince(begin);
  stats_.compute_seconds = s.compute;
  stats_.peak_activation_bytes = s.peak_bytes;
  stats_.peak_in_flight = s.peak_in_flight;
  return mean_loss;
}

void Pipeline::CheckHeader(const ActivationHeader& h) const {
  const std::string from = transport_->StageName(stage() - 1);
  if (h.micro_batches != options_.micro_batches) {
    throw InvalidArgument(fmt::format(
        "{}: {} cuts the batch into {} micro-batches, this stage into {}; pass the same "
        "micro_batches on every stage",
        Name(), from, h.micro_batches, options_.micro_batches));
  }
  if (!options_.input_row_shape.empty() && h.row_shape != options_.input_row_shape) {
    ActivationHeader want = h;
    want.row_shape = options_.input_row_shape;
    throw InvalidArgument(fmt::format(
        "{} expects input {} but {} sends {}; make {}'s output match this stage's input", Name(),
        want.Describe(), from, h.Describe(), from));
  }
}

void Pipeline::ReceiveInput(StepState& s, int micro) {
  if (micro == 0) {
    s.in_header = transport_->ReceiveHeader(stage() - 1);
    CheckHeader(s.in_header);
    s.batch = s.in_header.batch;
    s.rows = MicroBatchSizes(s.batch, s.m);
  }
  std::vector<int64_t> shape = {s.rows[micro]};
  shape.insert(shape.end(), s.in_header.row_shape.begin(), s.in_header.row_shape.end());
  at::Tensor x =
      at::empty(shape, at::TensorOptions().dtype(static_cast<c10::ScalarType>(s.in_header.dtype)));
  transport_->Receive(x, stage() - 1, PipelineTransport::kActivationTag,
                      fmt::format("activations of micro-batch {}", micro));
  s.inputs[micro] = x.requires_grad_(true);
}

at::Tensor Pipeline::Forward(StepState& s, const at::Tensor& x, int micro) {
  const Clock::time_point t0 = Clock::now();
  at::Tensor out;
  try {
    out = forward_(x);
  } catch (const c10::Error& e) {
    const std::string origin = stage() == 0
                                   ? std::string("the input batch")
                                   : "the input from " + transport_->StageName(stage() - 1);
    throw InvalidArgument(fmt::format("{}: forward of micro-batch {} failed on {} {}: {}", Name(),
                                      micro, origin, Describe(x),
                                      FirstLine(e.what_without_backtrace())));
  }
  s.compute += SecondsSince(t0);
  if (!out.defined() || out.dim() < 1 || out.size(0) != s.rows[micro]) {
    throw InvalidArgument(fmt::format(
        "{}: the output of micro-batch {} is {}, not {} rows; a stage must keep the batch in "
        "dim 0",
        Name(), micro, out.defined() ? Describe(out) : "undefined", s.rows[micro]));
  }
  return out;
}

void Pipeline::SendOutput(StepState& s, const at::Tensor& out, int micro) {
  ActivationHeader h;
  h.dtype = static_cast<int>(out.scalar_type());
  h.row_shape.assign(out.sizes().begin() + 1, out.sizes().end());
  h.batch = s.batch;
  h.micro_batches = s.m;
  if (micro == 0) {
    s.out_header = h;
    transport_->SendHeader(h, stage() + 1);
  } else if (!(h == s.out_header)) {
    throw InvalidArgument(fmt::format(
        "{}: the output of micro-batch {} is {} but micro-batch 0's was {}; within a step a "
        "stage's output rows must keep one shape and dtype",
        Name(), micro, h.Describe(), s.out_header.Describe()));
  }
  transport_->QueueSend(out.detach(), stage() + 1, PipelineTransport::kActivationTag,
                        fmt::format("activations of micro-batch {}", micro));
}

void Pipeline::RunForward(StepState& s, int micro) {
  if (stage() > 0) {
    ReceiveInput(s, micro);  // posts the queued sends with the receive
  } else {
    transport_->Post();
  }
  const at::Tensor& x = s.inputs[micro];
  at::Tensor out = Forward(s, x, micro);
  s.outputs[micro] = out;
  s.held_bytes += static_cast<int64_t>(x.nbytes() + out.nbytes());
  s.peak_bytes = std::max(s.peak_bytes, s.held_bytes);
  s.peak_in_flight = std::max(s.peak_in_flight, ++s.in_flight);
  if (stage() + 1 < stages()) {
    SendOutput(s, out, micro);
    return;
  }
  // The last stage: the micro-batch's loss, weighted so the sum is the batch's mean loss.
  if (micro == 0) {
    if (!s.target->defined() || s.target->dim() < 1 || s.target->size(0) != s.batch) {
      throw InvalidArgument(fmt::format(
          "{}: the target has {} but the batch has {} rows; pass the batch's targets to Step "
          "on the last stage",
          Name(), s.target->defined() ? Describe(*s.target) : "nothing", s.batch));
    }
    s.targets = at::tensor_split(*s.target, s.m, 0);
  }
  const Clock::time_point t0 = Clock::now();
  at::Tensor l = (*s.loss)(out, s.targets[micro]);
  if (!l.defined() || l.numel() != 1) {
    throw InvalidArgument(Name() + ": the loss function must return a scalar tensor");
  }
  at::Tensor weighted =
      l.reshape({}) * (static_cast<double>(s.rows[micro]) / static_cast<double>(s.batch));
  s.compute += SecondsSince(t0);
  const at::Tensor value = weighted.detach().to(at::kDouble);
  s.loss_sum = s.loss_sum.defined() ? s.loss_sum + value : value;
  s.losses[micro] = weighted;
}

void Pipeline::RunBackward(StepState& s, int micro) {
  // Local accumulation for every micro-batch but the last (the last backward of both schedules
  // on every stage): DDP all-reduces the stage's summed gradients once per step.
  std::optional<DistributedDataParallel::NoSyncGuard> no_sync;
  if (ddp_ && micro + 1 < s.m) no_sync.emplace(ddp_->NoSync());
  const at::Tensor& out = s.outputs[micro];
  if (stage() + 1 == stages()) {
    transport_->Post();
    const Clock::time_point t0 = Clock::now();
    if (s.losses[micro].requires_grad()) s.losses[micro].backward();
    s.compute += SecondsSince(t0);
  } else {
    at::Tensor grad = at::empty(out.sizes(), out.options());
    transport_->Receive(grad, stage() + 1, PipelineTransport::kGradientTag,
                        fmt::format("gradients of micro-batch {}", micro));
    const Clock::time_point t0 = Clock::now();
    if (out.requires_grad()) torch::autograd::backward({out}, {grad});
    s.compute += SecondsSince(t0);
  }
  const at::Tensor& x = s.inputs[micro];
  if (stage() > 0) {
    at::Tensor gx = x.grad().defined() ? x.grad() : at::zeros_like(x);
    transport_->QueueSend(gx, stage() - 1, PipelineTransport::kGradientTag,
                          fmt::format("gradients of micro-batch {}", micro));
  }
  s.held_bytes -= static_cast<int64_t>(x.nbytes() + out.nbytes());
  --s.in_flight;
  s.inputs[micro] = at::Tensor();
  s.outputs[micro] = at::Tensor();
  s.losses[micro] = at::Tensor();
}

}  // namespace cohort::runtime
