// The training loop. What needs care here is that every rank takes exactly the same number of
// steps: the sampler gives every rank the same share and batch count, max_steps is the same
// everywhere, and the only run-time decision that could differ between ranks (stop now, because
// one rank was asked to) is taken together at a report, where the ranks exchange their losses.
// Reports happen every K steps, where K is rank 0's estimate of how many steps fit into
// progress_interval, agreed on at the previous report; so there is no extra collective per step.
// At a report every rank's compute time per step travels too (an all-gather of a few doubles
// per rank: rank_reports.h), so rank 0 can name a straggler and print the per-rank table at the
// end. Each Fit is a Run: its sampler, counters and outputs, one TakeStep() per step.
#include "runtime/trainer.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <fmt/format.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <optional>

#include "collectives/heartbeat.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timeline.h"
#include "runtime/metrics.h"
#include "runtime/progress.h"
#include "runtime/ps_async.h"
#include "runtime/rank_reports.h"
#include "runtime/timeline_gather.h"

namespace cohort::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// optimizer.zero_grad() without its detach_(): libtorch 1.13's Optimizer::zero_grad() detaches
// every .grad in place, which fails on gradients that are views into DDP's buckets ("Can't
// detach views in-place"). Zeroing in place is what it amounts to for a plain .grad too.
void ZeroGrad(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      at::Tensor& g = p.mutable_grad();
      if (g.defined()) g.zero_();
    }
  }
}

}  // namespace

class Trainer::Impl {
 public:
  Impl(std::shared_ptr<ProcessGroup> pg, std::shared_ptr<DistributedDataParallel> ddp,
       std::shared_ptr<torch::optim::Optimizer> optimizer, TrainerOptions options)
      : pg_(std::move(pg)),
        ddp_(std::move(ddp)),
        optimizer_(std::move(optimizer)),
        options_(std::move(options)) {
    if (!pg_)
      throw InvalidArgument("Trainer: the process group is null; pass ProcessGroup::FromEnv()");
    if (!optimizer_) throw InvalidArgument("Trainer: the optimizer is null");
    if (options_.batch_size == 0) {
      throw InvalidArgument(
          "Trainer: batch_size is 0; pass the number of examples per worker step");
    }
    if (options_.epochs < 0) {
      throw InvalidArgument(fmt::format("Trainer: epochs is {}; pass 0 or more", options_.epochs));
    }
    if (options_.max_steps < -1) {
      throw InvalidArgument(fmt::format(
          "Trainer: max_steps is {}; pass -1 (no limit) or a step count", options_.max_steps));
    }
    const bool own_data = options_.data_rank == -1 && options_.data_ranks == -1;
    if (!own_data && (options_.data_ranks < 1 || options_.data_rank < 0 ||
                      options_.data_rank >= options_.data_ranks)) {
      throw InvalidArgument(fmt::format(
          "Trainer: data_rank {} of data_ranks {}; pass both (0 <= data_rank < data_ranks) or "
          "neither",
          options_.data_rank, options_.data_ranks));
    }
    if (options_.ps_mode == "async") {
      if (ddp_) throw InvalidArgument("Trainer: ps async mode all-reduces nothing; pass ddp null");
      async_ = std::make_unique<PsAsyncTraining>(pg_, optimizer_, options_.staleness,
                                                 options_.ps_pipeline);
    } else if (!options_.ps_mode.empty() && options_.ps_mode != "sync") {
      throw InvalidArgument(
          fmt::format("Trainer: ps_mode '{}'; pass sync or async", options_.ps_mode));
    }
    timeline::Init();
    data_rank_ = own_data ? pg_->Rank() : options_.data_rank;
    data_ranks_ = own_data ? pg_->Size() : options_.data_ranks;
    state_.world = data_ranks_;
  }

  // One step on these indices; returns its loss as a detached scalar tensor (on the loss's
  // device: no host sync per step).
  using Step = std::function<at::Tensor(const std::vector<size_t>& indices)>;
  TrainResult Fit(size_t dataset_size, const Step& step);
  // The step of a LossFn: loss, backward, optimizer step.
  Step LossStep(const LossFn& loss_fn);

  std::vector<StepHook> hooks_;
  std::vector<std::shared_ptr<MetricsSink>> sinks_;  // rank 0 writes every report to each
  std::function<std::string()> tracking_run_;
  std::atomic<bool> stop_requested_{false};
  mutable std::mutex state_mu_;
  TrainerState state_;
  bool restored_ = false;
  std::unique_ptr<PsAsyncTraining> async_;  // ps async mode

 private:
  TrainerState Snapshot() const {
    std::lock_guard<std::mutex> lock(state_mu_);
    return state_;
  }
  std::unique_ptr<collectives::Heartbeat> MakeHeartbeat();
  class Run;  // one Fit

  std::shared_ptr<ProcessGroup> pg_;
  std::shared_ptr<DistributedDataParallel> ddp_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  TrainerOptions options_;
  int data_rank_ = 0;  // the sampler's rank and world
  int data_ranks_ = 1;
};

std::unique_ptr<collectives::Heartbeat> Trainer::Impl::MakeHeartbeat() {
  if (!pg_->store()) return nullptr;
  try {
    return collectives::Heartbeat::FromEnv(pg_->store());
  } catch (const std::exception& e) {
    // The heartbeat only serves the launcher's hang detection; training goes on without it.
    COHORT_WARN(kRuntime, "no heartbeat to the launcher ({}); training goes on", e.what());
    return nullptr;
  }
}

Trainer::Impl::Step Trainer::Impl::LossStep(const LossFn& loss_fn) {
  if (!loss_fn) throw InvalidArgument("Trainer::Fit: the loss function is empty");
  return [this, &loss_fn](const std::vector<size_t>& indices) {
    at::Tensor loss;
    {
      timeline::Span span("forward", "train");
      loss = loss_fn(indices);
    }
    if (!loss.defined() || loss.numel() != 1) {
      throw InvalidArgument(fmt::format(
          "Trainer: the loss function must return a scalar tensor; it returned {}",
          loss.defined() ? fmt::format("one with {} elements", loss.numel()) : "nothing"));
    }
    if (!loss.requires_grad()) {
      throw InvalidArgument(
          "Trainer: the loss does not require grad (computed under a NoGradGuard, or every "
          "parameter frozen?); return the model's loss with its autograd graph");
    }
    ZeroGrad(*optimizer_);
    {
      timeline::Span span("backward", "train");
      loss.backward();
    }
    timeline::Span span("optimizer", "train");
    if (async_) {
      async_->Step();  // the servers step the optimizer
    } else {
      optimizer_->step();
    }
    return loss.detach().reshape({});
  };
}

// One Fit: its sampler, what it counts since the last report and over the whole Fit, and where
// the reports go. Fit() runs TakeStep() until the epochs, max_steps or an agreed stop end it.
class Trainer::Impl::Run {
 public:
  Run(Impl& t, size_t dataset_size);
  // One step of `epoch` and, when one falls on it, a report; false without a step when the
  // epoch is done, or max_steps reached (then stop is set).
  bool TakeStep(int64_t epoch, const Step& step_fn);
  // After the last step: the final pull, the timeline, the result and rank 0's summary.
  TrainResult Finish();
  void EndLine() {
    if (progress_) progress_->EndLine();
  }

  const TrainerState start;
  DistributedSampler sampler;
  bool stop = false;

 private:
  // Steps left from (epoch, position in the share, global step) within epochs and max_steps.
  int64_t StepsLeft(int64_t epoch, size_t position, int64_t step) const;
  // The step just taken: the trainer's state after it, which the hooks and checkpoints see.
  TrainerState Advance(int64_t epoch, const TrainerState& before);
  // Rank 0's progress line and metrics sinks.
  void OpenOutputs();
  // Collective: every rank reports after the same step.
  void Report(int64_t epoch, const TrainerState& after, bool end_line, bool local_stop);

  Impl& t_;
  const size_t batch_;
  const int world_;
  const bool rank0_;
  size_t share_ = 0;  // once the sampler is where the state says
  int64_t steps_per_epoch_ = 0;
  Clock::time_point begin_;
  std::unique_ptr<collectives::Heartbeat> heartbeat_;
  std::unique_ptr<ProgressLine> progress_;
  std::vector<std::shared_ptr<MetricsSink>> sinks_;
  TrainResult result_;
  Clock::time_point last_report_;
  int64_t local_samples_ = 0;
  int64_t samples_since_report_ = 0;
  at::Tensor loss_sum_;  // on the loss's device: no host sync per step (CUDA)
  at::Tensor last_loss_;
  int64_t loss_steps_ = 0;
  double compute_seconds_ = 0;  // in the step function less DDP's exposed wait, since the report
  std::vector<double> rank_compute_;  // rank 0: over the Fit
  ReportAll totals_;
  int64_t next_report_;  // the first step reports, so a loss shows up early
  ProgressSnapshot shown_;
  bool stop_agreed_ = false;  // stopped because a rank was asked to (not by max_steps)
};

Trainer::Impl::Run::Run(Impl& t, size_t dataset_size)
    : start(t.Snapshot()),
      sampler(dataset_size, t.data_rank_, t.data_ranks_, /*shuffle=*/true, t.options_.seed,
              t.options_.drop_last),
      t_(t),
      batch_(t.options_.batch_size),
      world_(t.pg_->Size()),
      rank0_(t.pg_->Rank() == 0),
      rank_compute_(static_cast<size_t>(world_), 0.0),
      next_report_(start.step + 1) {
  // Continue where the state says: after Restore (a checkpoint), or in a second Fit after a stop.
  if (t.restored_ || start.step > 0) {
    sampler.Restore(start.sampler, start.world > 0 ? start.world : t.data_ranks_);
  } else {
    sampler.SetEpoch(start.epoch);
  }
  if (t.async_ && (t.restored_ || !t.async_->Started())) t.async_->Start(start.step);
  t.restored_ = false;
  share_ = sampler.ShareSize();
  steps_per_epoch_ = static_cast<int64_t>((share_ + batch_ - 1) / batch_);
  heartbeat_ = t.MakeHeartbeat();
  OpenOutputs();
  shown_.epochs = t.options_.epochs;
  shown_.steps_per_epoch = steps_per_epoch_;
  if (rank0_) {
    COHORT_INFO(kRuntime,
                "training {} steps: {} examples, {} per rank, batch {} per rank, {} rank(s)",
                StepsLeft(start.epoch, sampler.State().position, start.step), dataset_size, share_,
                batch_, t.data_ranks_);
  }
  begin_ = last_report_ = Clock::now();
}

int64_t Trainer::Impl::Run::StepsLeft(int64_t epoch, size_t position, int64_t step) const {
  const int64_t epochs = t_.options_.epochs, max_steps = t_.options_.max_steps;
  if (epoch >= epochs) return 0;
  const auto in_epoch =
      static_cast<int64_t>((share_ - std::min(position, share_) + batch_ - 1) / batch_);
  int64_t left = in_epoch + std::max<int64_t>(0, epochs - epoch - 1) * steps_per_epoch_;
  if (max_steps >= 0) left = std::min(left, std::max<int64_t>(0, max_steps - step));
  return left;
}

void Trainer::Impl::Run::OpenOutputs() {
  if (!rank0_) return;
  if (t_.options_.progress) {
    const ProgressMode mode = ProgressModeFromEnv(stdout);
    if (mode != ProgressMode::kOff) {
      progress_ = std::make_unique<ProgressLine>(stdout, mode == ProgressMode::kTty);
    }
  }
  if (!t_.options_.metrics_path.empty()) {
    sinks_.push_back(
        std::make_shared<MetricsWriter>(t_.options_.metrics_path, /*append=*/start.step > 0));
  }
  sinks_.insert(sinks_.end(), t_.sinks_.begin(), t_.sinks_.end());
}

bool Trainer::Impl::Run::TakeStep(int64_t epoch, const Step& step_fn) {
  const TrainerState before = t_.Snapshot();
  if (t_.options_.max_steps >= 0 && before.step >= t_.options_.max_steps) {
    stop = true;
    return false;
  }
  const std::vector<size_t> indices = sampler.Next(batch_);
  if (indices.empty()) return false;  // epoch done

  timeline::Span step_span("step", "train");
  const Clock::time_point step_begin = Clock::now();
  const at::Tensor value = step_fn(indices);
  compute_seconds_ += SecondsSince(step_begin) - (t_.ddp_ ? t_.ddp_->Stats().exposed_seconds : 0);
  loss_sum_ = loss_sum_.defined() ? loss_sum_.add(value) : value.clone();
  last_loss_ = value;
  ++loss_steps_;
  local_samples_ += static_cast<int64_t>(indices.size());
  samples_since_report_ += static_cast<int64_t>(indices.size());
  const TrainerState after = Advance(epoch, before);

  // Every rank evaluates the same condition here, except the stop request in a world of one,
  // where there is nobody to agree with.
  const size_t position = after.sampler.position;
  const bool epoch_end = position >= share_;
  const bool last = (epoch_end && epoch + 1 >= t_.options_.epochs) ||
                    (t_.options_.max_steps >= 0 && after.step >= t_.options_.max_steps);
  const bool local_stop = t_.stop_requested_.load();
  shown_.epoch = epoch;
  shown_.step = static_cast<int64_t>((std::min(position, share_) + batch_ - 1) / batch_);
  shown_.eta_seconds = SecondsSince(begin_) / static_cast<double>(result_.steps) *
                       static_cast<double>(StepsLeft(epoch, position, after.step));
  if (after.step >= next_report_ || epoch_end || last || (world_ == 1 && local_stop)) {
    Report(epoch, after, epoch_end || last, local_stop);
  } else if (progress_) {
    progress_->Tick(shown_);
  }
  return true;
}

TrainerState Trainer::Impl::Run::Advance(int64_t epoch, const TrainerState& before) {
  TrainerState after;
  {
    std::lock_guard<std::mutex> lock(t_.state_mu_);
    t_.state_.epoch = epoch;
    t_.state_.step = before.step + 1;
    t_.state_.sampler = sampler.State();
    t_.state_.world = t_.data_ranks_;
    if (t_.tracking_run_) {
      std::string id = t_.tracking_run_();
      if (!id.empty()) t_.state_.tracking_run_id = std::move(id);
    }
    after = t_.state_;
  }
  ++result_.steps;
  if (heartbeat_) heartbeat_->Beat();
  for (const StepHook& hook : t_.hooks_) hook(after);
  return after;
}

void Trainer::Impl::Run::Report(int64_t epoch, const TrainerState& after, bool end_line,
                                bool local_stop) {
  const double since = SecondsSince(last_report_);
  const double steps = static_cast<double>(std::max<int64_t>(1, loss_steps_));
  ReportExchange mine;
  mine.loss_sum = loss_sum_.item<double>();
  mine.loss_steps = static_cast<double>(loss_steps_);
  mine.last_loss = last_loss_.item<double>();
  mine.stop = local_stop ? 1 : 0;
  mine.step_seconds = compute_seconds_ / steps;
  mine.node = static_cast<double>(env::kNodeRank.Int(0));
  if (rank0_) {
    // Steps that fit into one progress interval at the pace since the last report.
    const double per_step = since / steps, interval = t_.options_.progress_interval;
    const double every = interval <= 0 || per_step <= 0 ? 1.0 : std::floor(interval / per_step);
    mine.next_every = std::clamp(every, 1.0, 1e6);
  }
  timeline::Span report_span("report", "train");
  const ReportAll gathered = ExchangeReports(*t_.pg_, mine);
  const ReportExchange& all = gathered.sum;
  for (size_t r = 0; r < rank_compute_.size(); ++r) {
    rank_compute_[r] += gathered.step_seconds[r] * static_cast<double>(loss_steps_);
  }
  totals_.node = gathered.node;
  next_report_ = after.step + std::max<int64_t>(1, std::llround(all.next_every));
  if (all.stop > 0) stop = stop_agreed_ = true;
  const double mean_loss = all.loss_sum / std::max(1.0, all.loss_steps);
  result_.last_loss = all.last_loss / world_;
  loss_sum_ = at::Tensor();
  loss_steps_ = 0;
  compute_seconds_ = 0;
  MetricsRecord record{after.step, epoch, mean_loss, 0, SecondsSince(begin_)};
  FindStraggler(gathered, record);
  if (t_.async_) record.ps_staleness = static_cast<double>(t_.async_->TakeMaxSpread());
  record.samples_per_second =
      since > 0 ? static_cast<double>(samples_since_report_ * t_.data_ranks_) / since : 0;
  samples_since_report_ = 0;
  last_report_ = Clock::now();
  shown_.samples_per_second = record.samples_per_second;
  shown_.loss = mean_loss;
  shown_.has_loss = true;
  shown_.note =
      record.straggler_rank < 0
          ? ""
          : fmt::format("straggler: rank {} on node {} at {:.1f}x the median step time",
                        record.straggler_rank, record.straggler_node, record.straggler_ratio);
  if (progress_) {
    progress_->Report(shown_);
    if (end_line || stop) progress_->EndLine();
  }
  for (const auto& sink : sinks_) sink->Write(record);
}

TrainResult Trainer::Impl::Run::Finish() {
  EndLine();
  if (t_.async_) t_.async_->PullFinal();  // every rank evaluates the same parameters
  WriteTimeline(*t_.pg_);                 // collective: every rank ends Fit after the same step
  result_.seconds = SecondsSince(begin_);
  result_.samples = local_samples_ * t_.data_ranks_;  // equal shares: every replica saw as many
  result_.samples_per_second =
      result_.seconds > 0 ? static_cast<double>(result_.samples) / result_.seconds : 0;
  if (rank0_ && result_.steps > 0) {
    for (double& c : rank_compute_) c /= static_cast<double>(result_.steps);
    totals_.step_seconds = rank_compute_;
    PrintRankTable(totals_);
  }
  if (rank0_) {
    COHORT_INFO(kRuntime, "trained {} steps in {:.1f} s: {:.0f} samples/s, loss {:.4f}",
                result_.steps, result_.seconds, result_.samples_per_second, result_.last_loss);
    if (t_.ddp_ && world_ > 1) {
      const DdpStats s = t_.ddp_->Stats();
      COHORT_INFO(kRuntime,
                  "ddp: {} bucket(s), all-reduce {:.2f} s in total, {:.0f}% of it hidden "
                  "behind backward",
                  s.buckets, s.total_comm_seconds, 100.0 * s.OverlapFraction());
    }
  }
  // The request is used up; a later Fit (after a checkpoint, say) trains again.
  if (stop_agreed_) t_.stop_requested_ = false;
  return result_;
}

TrainResult Trainer::Impl::Fit(size_t dataset_size, const Step& step_fn) {
  if (dataset_size == 0) {
    throw InvalidArgument("Trainer::Fit: the dataset is empty (0 examples); nothing to train on");
  }
  Run run(*this, dataset_size);
  try {
    for (int64_t epoch = run.start.epoch; epoch < options_.epochs && !run.stop; ++epoch) {
      if (epoch != run.sampler.Epoch()) run.sampler.SetEpoch(epoch);
      while (!run.stop && run.TakeStep(epoch, step_fn)) {
      }
    }
  } catch (...) {
    run.EndLine();
    throw;
  }
  return run.Finish();
}

Trainer::Trainer(std::shared_ptr<ProcessGroup> pg, std::shared_ptr<DistributedDataParallel> ddp,
                 std::shared_ptr<torch::optim::Optimizer> optimizer, TrainerOptions options)
    : impl_(std::make_unique<Impl>(std::move(pg), std::move(ddp), std::move(optimizer),
                                   std::move(options))) {}

Trainer::~Trainer() = default;

TrainResult Trainer::Fit(size_t dataset_size, const LossFn& loss) {
  return impl_->Fit(dataset_size, impl_->LossStep(loss));
}

TrainResult Trainer::Fit(size_t dataset_size, const StepFn& step) {
  if (!step) throw InvalidArgument("Trainer::Fit: the step function is empty");
  if (impl_->async_) {
    throw InvalidArgument("Trainer: ps async mode steps the optimizer itself; pass a LossFn");
  }
  return impl_->Fit(dataset_size, [&step](const std::vector<size_t>& indices) {
    return at::scalar_tensor(step(indices), at::kDouble);
  });
}

void Trainer::OnStep(StepHook hook) { impl_->hooks_.push_back(std::move(hook)); }

void Trainer::AddMetricsSink(std::shared_ptr<MetricsSink> sink) {
  if (!sink) throw InvalidArgument("Trainer::AddMetricsSink: the sink is null");
  impl_->sinks_.push_back(std::move(sink));
}

void Trainer::SetTrackingRun(std::function<std::string()> run_id) {
  impl_->tracking_run_ = std::move(run_id);
}

void Trainer::RequestStop() { impl_->stop_requested_.store(true); }

TrainerState Trainer::State() const {
  std::lock_guard<std::mutex> lock(impl_->state_mu_);
  return impl_->state_;
}

void Trainer::FetchServerState() {
  if (impl_->async_) impl_->async_->FetchState();
}

void Trainer::Restore(const TrainerState& state) {
  std::lock_guard<std::mutex> lock(impl_->state_mu_);
  impl_->state_ = state;
  impl_->restored_ = true;
}

}  // namespace cohort::runtime
