// The training loop. What needs care here is that every rank takes exactly the same number of
// steps: the sampler gives every rank the same share and batch count, max_steps is the same
// everywhere, and the only run-time decision that could differ between ranks (stop now, because
// one rank was asked to) is taken together at a report, where the ranks exchange their losses.
// Reports happen every K steps, where K is rank 0's estimate of how many steps fit into
// progress_interval, agreed on at the previous report; so there is no extra collective per step.
// At a report every rank's compute time per step travels too (an all-gather of a few doubles
// per rank), so rank 0 can name a straggler and print the per-rank table at the end.
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
#include "runtime/timeline_gather.h"

namespace cohort::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// What each rank contributes at a report (one all-gather of 7 doubles per rank).
struct ReportExchange {
  double loss_sum = 0;      // this rank's losses since the previous report
  double loss_steps = 0;    // how many steps they are
  double last_loss = 0;     // this rank's loss of the step just taken
  double stop = 0;          // 1 if this rank was asked to stop
  double next_every = 0;    // rank 0 only: steps until the next report
  double step_seconds = 0;  // mean compute time per step since the previous report
  double node = 0;          // this rank's node (COHORT_NODE_RANK)
};
constexpr size_t kExchangeDoubles = sizeof(ReportExchange) / sizeof(double);
static_assert(kExchangeDoubles == 7, "ReportExchange is 7 doubles");

// The report's view of all ranks: the first five fields summed, the rest per rank.
struct ReportAll {
  ReportExchange sum;
  std::vector<double> step_seconds;  // by rank
  std::vector<int> node;             // by rank
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Fills the record's step time and, when one rank is over 1.2x the median, its straggler.
void FindStraggler(const ReportAll& all, MetricsRecord& record) {
  const double median = Median(all.step_seconds);
  record.step_seconds = median;
  if (all.step_seconds.size() < 2 || median <= 0) return;
  const auto slowest = std::max_element(all.step_seconds.begin(), all.step_seconds.end());
  const double ratio = *slowest / median;
  if (ratio <= 1.2) return;
  record.straggler_rank = static_cast<int>(slowest - all.step_seconds.begin());
  record.straggler_node = all.node[static_cast<size_t>(record.straggler_rank)];
  record.straggler_ratio = ratio;
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
  // Every rank's e (no collective in a world of one).
  ReportAll Exchange(const ReportExchange& e);
  // Rank 0, at the end: each rank's mean compute time per step over the whole Fit.
  void PrintRankTable(const ReportAll& totals) const;
  std::unique_ptr<collectives::Heartbeat> MakeHeartbeat();

  std::shared_ptr<ProcessGroup> pg_;
  std::shared_ptr<DistributedDataParallel> ddp_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  TrainerOptions options_;
  int data_rank_ = 0;  // the sampler's rank and world
  int data_ranks_ = 1;
};

ReportAll Trainer::Impl::Exchange(const ReportExchange& e) {
  const auto world = static_cast<size_t>(pg_->Size());
  std::vector<ReportExchange> ranks(world);
  ranks[static_cast<size_t>(pg_->Rank())] = e;
  if (world > 1) {
    ReportExchange mine = e;
    pg_->comm()
        .AllGather(collectives::TensorView(&mine, kExchangeDoubles, collectives::DType::kFloat64),
                   collectives::TensorView(ranks.data(), kExchangeDoubles * world,
                                           collectives::DType::kFloat64))
        ->Wait();
  }
  ReportAll all;
  for (const ReportExchange& r : ranks) {
    all.sum.loss_sum += r.loss_sum;
    all.sum.loss_steps += r.loss_steps;
    all.sum.last_loss += r.last_loss;
    all.sum.stop += r.stop;
    all.sum.next_every += r.next_every;
    all.step_seconds.push_back(r.step_seconds);
    all.node.push_back(static_cast<int>(r.node));
  }
  return all;
}

void Trainer::Impl::PrintRankTable(const ReportAll& totals) const {
  if (totals.step_seconds.size() < 2) return;
  const double median = Median(totals.step_seconds);
  std::string table = "compute time per step by rank:";
  for (size_t r = 0; r < totals.step_seconds.size(); ++r) {
    const double s = totals.step_seconds[r];
    table += fmt::format("\n  rank {} (node {}): {:.2f} ms{}", r, totals.node[r], s * 1e3,
                         median > 0 && s / median > 1.2
                             ? fmt::format("  straggler at {:.1f}x the median", s / median)
                             : "");
  }
  COHORT_INFO(kRuntime, "{}", table);
}

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

TrainResult Trainer::Impl::Fit(size_t dataset_size, const Step& step_fn) {
  if (dataset_size == 0) {
    throw InvalidArgument("Trainer::Fit: the dataset is empty (0 examples); nothing to train on");
  }
  const int rank = pg_->Rank();
  const int world = pg_->Size();
  const int data_world = data_ranks_;
  const bool rank0 = rank == 0;
  const size_t batch = options_.batch_size;

  TrainerState start = Snapshot();
  DistributedSampler sampler(dataset_size, data_rank_, data_world, /*shuffle=*/true, options_.seed,
                             options_.drop_last);
  // Continue where the state says: after Restore (a checkpoint), or in a second Fit after a stop.
  if (restored_ || start.step > 0) {
    sampler.Restore(start.sampler, start.world > 0 ? start.world : data_world);
  } else {
    sampler.SetEpoch(start.epoch);
  }
  if (async_ && (restored_ || !async_->Started())) async_->Start(start.step);
  restored_ = false;
  const size_t share = sampler.ShareSize();
  const auto steps_per_epoch = static_cast<int64_t>((share + batch - 1) / batch);
  const int64_t max_steps = options_.max_steps;
  auto steps_left = [&](int64_t epoch, size_t position, int64_t step) {
    const auto in_epoch =
        static_cast<int64_t>((share - std::min(position, share) + batch - 1) / batch);
    int64_t left = in_epoch + std::max<int64_t>(0, options_.epochs - epoch - 1) * steps_per_epoch;
    if (epoch >= options_.epochs) left = 0;
    if (max_steps >= 0) left = std::min(left, std::max<int64_t>(0, max_steps - step));
    return left;
  };
  const int64_t planned = steps_left(start.epoch, sampler.State().position, start.step);

  std::unique_ptr<collectives::Heartbeat> heartbeat = MakeHeartbeat();
  std::unique_ptr<ProgressLine> progress;
  std::vector<std::shared_ptr<MetricsSink>> sinks;
  if (rank0 && options_.progress) {
    const ProgressMode mode = ProgressModeFromEnv(stdout);
    if (mode != ProgressMode::kOff) {
      progress = std::make_unique<ProgressLine>(stdout, mode == ProgressMode::kTty);
    }
  }
  if (rank0 && !options_.metrics_path.empty()) {
    sinks.push_back(
        std::make_shared<MetricsWriter>(options_.metrics_path, /*append=*/start.step > 0));
  }
  if (rank0) sinks.insert(sinks.end(), sinks_.begin(), sinks_.end());
  const double node = static_cast<double>(env::kNodeRank.Int(0));
  if (rank0) {
    COHORT_INFO(kRuntime,
                "training {} steps: {} examples, {} per rank, batch {} per rank, {} rank(s)",
                planned, dataset_size, share, batch, data_world);
  }

  const Clock::time_point begin = Clock::now();
  Clock::time_point last_report = begin;
  TrainResult result;
  int64_t local_samples = 0;
  int64_t samples_since_report = 0;
  at::Tensor loss_sum;  // on the loss's device: no host sync per step (CUDA)
  at::Tensor last_loss;
  int64_t loss_steps = 0;
  double compute_seconds = 0;  // in the step function less DDP's exposed wait, since the report
  std::vector<double> rank_compute(static_cast<size_t>(world), 0.0);  // rank 0: over the Fit
  ReportAll totals;
  int64_t next_report = start.step + 1;  // the first step reports, so a loss shows up early
  ProgressSnapshot shown;
  shown.epochs = options_.epochs;
  shown.steps_per_epoch = steps_per_epoch;
  bool stop = false;
  bool stop_agreed = false;  // stopped because a rank was asked to (not by max_steps)

  try {
    for (int64_t epoch = start.epoch; epoch < options_.epochs && !stop; ++epoch) {
      if (epoch != sampler.Epoch()) sampler.SetEpoch(epoch);
      while (!stop) {
        TrainerState before = Snapshot();
        if (max_steps >= 0 && before.step >= max_steps) {
          stop = true;
          break;
        }
        const std::vector<size_t> indices = sampler.Next(batch);
        if (indices.empty()) break;  // epoch done

        timeline::Span step_span("step", "train");
        const Clock::time_point step_begin = Clock::now();
        const at::Tensor value = step_fn(indices);
        compute_seconds += SecondsSince(step_begin) - (ddp_ ? ddp_->Stats().exposed_seconds : 0);
        loss_sum = loss_sum.defined() ? loss_sum.add(value) : value.clone();
        last_loss = value;
        ++loss_steps;
        local_samples += static_cast<int64_t>(indices.size());
        samples_since_report += static_cast<int64_t>(indices.size());
        const SamplerState sampler_state = sampler.State();
        TrainerState after;
        {
          std::lock_guard<std::mutex> lock(state_mu_);
          state_.epoch = epoch;
          state_.step = before.step + 1;
          state_.sampler = sampler_state;
          state_.world = data_world;
          if (tracking_run_) {
            std::string id = tracking_run_();
            if (!id.empty()) state_.tracking_run_id = std::move(id);
          }
          after = state_;
        }
        ++result.steps;
        if (heartbeat) heartbeat->Beat();
        for (const StepHook& hook : hooks_) hook(after);

        // Every rank evaluates the same condition here, except the stop request in a world of
        // one, where there is nobody to agree with.
        const bool epoch_end = sampler_state.position >= share;
        const bool last = (epoch_end && epoch + 1 >= options_.epochs) ||
                          (max_steps >= 0 && after.step >= max_steps);
        const bool local_stop = stop_requested_.load();
        const bool report =
            after.step >= next_report || epoch_end || last || (world == 1 && local_stop);

        shown.epoch = epoch;
        shown.step =
            static_cast<int64_t>((std::min(sampler_state.position, share) + batch - 1) / batch);
        const double elapsed = SecondsSince(begin);
        const int64_t left = steps_left(epoch, sampler_state.position, after.step);
        shown.eta_seconds = elapsed / static_cast<double>(result.steps) * static_cast<double>(left);
        if (!report) {
          if (progress) progress->Tick(shown);
          continue;
        }

        const double since = SecondsSince(last_report);
        ReportExchange mine;
        mine.loss_sum = loss_sum.item<double>();
        mine.loss_steps = static_cast<double>(loss_steps);
        mine.last_loss = last_loss.item<double>();
        mine.stop = local_stop ? 1 : 0;
        mine.step_seconds = compute_seconds / static_cast<double>(std::max<int64_t>(1, loss_steps));
        mine.node = node;
        if (rank0) {
          // Steps that fit into one progress interval at the pace since the last report.
          const double per_step = since / static_cast<double>(std::max<int64_t>(1, loss_steps));
          const double every = options_.progress_interval <= 0 || per_step <= 0
                                   ? 1.0
                                   : std::floor(options_.progress_interval / per_step);
          mine.next_every = std::clamp(every, 1.0, 1e6);
        }
        timeline::Span report_span("report", "train");
        const ReportAll gathered = Exchange(mine);
        const ReportExchange& all = gathered.sum;
        for (size_t r = 0; r < rank_compute.size(); ++r) {
          rank_compute[r] += gathered.step_seconds[r] * static_cast<double>(loss_steps);
        }
        totals.node = gathered.node;
        next_report = after.step + std::max<int64_t>(1, std::llround(all.next_every));
        if (all.stop > 0) stop = stop_agreed = true;
        const double mean_loss = all.loss_sum / std::max(1.0, all.loss_steps);
        result.last_loss = all.last_loss / world;
        loss_sum = at::Tensor();
        loss_steps = 0;
        compute_seconds = 0;
        MetricsRecord record{after.step, epoch, mean_loss, 0, SecondsSince(begin)};
        FindStraggler(gathered, record);
        if (async_) record.ps_staleness = static_cast<double>(async_->TakeMaxSpread());

        const double rate =
            since > 0 ? static_cast<double>(samples_since_report * data_world) / since : 0;
        samples_since_report = 0;
        last_report = Clock::now();
        shown.samples_per_second = rate;
        shown.loss = mean_loss;
        shown.has_loss = true;
        shown.note =
            record.straggler_rank < 0
                ? ""
                : fmt::format(
                      "straggler: rank {} on node {} at {:.1f}x the median step "
                      "time",
                      record.straggler_rank, record.straggler_node, record.straggler_ratio);
        if (progress) {
          progress->Report(shown);
          if (epoch_end || last || stop) progress->EndLine();
        }
        record.samples_per_second = rate;
        for (const auto& sink : sinks) sink->Write(record);
      }
    }
  } catch (...) {
    if (progress) progress->EndLine();
    throw;
  }
  if (progress) progress->EndLine();
  if (async_) async_->PullFinal();  // every rank evaluates the same parameters
  WriteTimeline(*pg_);              // collective: every rank ends Fit after the same step

  result.seconds = SecondsSince(begin);
  result.samples = local_samples * data_world;  // equal shares: every replica saw as many
  result.samples_per_second =
      result.seconds > 0 ? static_cast<double>(result.samples) / result.seconds : 0;
  if (rank0 && result.steps > 0) {
    for (double& c : rank_compute) c /= static_cast<double>(result.steps);
    totals.step_seconds = rank_compute;
    PrintRankTable(totals);
  }
  if (rank0) {
    COHORT_INFO(kRuntime, "trained {} steps in {:.1f} s: {:.0f} samples/s, loss {:.4f}",
                result.steps, result.seconds, result.samples_per_second, result.last_loss);
    if (ddp_ && world > 1) {
      const DdpStats s = ddp_->Stats();
      COHORT_INFO(kRuntime,
                  "ddp: {} bucket(s), all-reduce {:.2f} s in total, {:.0f}% of it hidden "
                  "behind backward",
                  s.buckets, s.total_comm_seconds, 100.0 * s.OverlapFraction());
    }
  }
  // The request is used up; a later Fit (after a checkpoint, say) trains again.
  if (stop_agreed) stop_requested_ = false;
  return result;
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
