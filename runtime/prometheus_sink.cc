#include "runtime/prometheus_sink.h"

#include <algorithm>
#include <utility>

#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "runtime/ddp.h"
#include "runtime/trainer.h"

#ifdef COHORT_HAVE_PROMETHEUS
#include <prometheus/collectable.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include "checkpoint/save_stats.h"
#include "collectives/op_counters.h"
#include "common/metrics_server.h"
#endif

namespace cohort::runtime {

std::vector<double> StepSecondsBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

#ifdef COHORT_HAVE_PROMETHEUS
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// The families read at scrape time (on the exposer's thread) from the process-wide counters,
// so that the training thread pays nothing for them.
class PulledMetrics : public prometheus::Collectable {
 public:
  PulledMetrics(std::string rank, std::shared_ptr<DistributedDataParallel> ddp)
      : rank_(std::move(rank)), ddp_(std::move(ddp)) {}

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> out;
    AddCollectives(out);
    if (ddp_) {
      const DdpStats s = ddp_->Stats();
      Add(out, "cohort_ddp_communication_seconds_total",
          "Run time of DDP's gradient all-reduces, summed over buckets and steps",
          MetricType::Counter, s.total_comm_seconds);
      Add(out, "cohort_ddp_exposed_communication_seconds_total",
          "Time backward's end waited for gradient communication (not hidden by overlap)",
          MetricType::Counter, s.total_exposed_seconds);
    }
    const checkpoint::SaveTotals c = checkpoint::SaveStats::Totals();
    Add(out, "cohort_checkpoint_saves_total", "Checkpoint snapshots this rank completed",
        MetricType::Counter, static_cast<double>(c.saves));
    Add(out, "cohort_checkpoint_save_failures_total", "Checkpoint saves that failed",
        MetricType::Counter, static_cast<double>(c.failures));
    Add(out, "cohort_checkpoint_save_bytes_total", "Bytes of this rank's checkpoint shards saved",
        MetricType::Counter, static_cast<double>(c.bytes));
    Add(out, "cohort_checkpoint_save_seconds_total",
        "Seconds from the start of each background save until its snapshot was complete",
        MetricType::Counter, c.seconds);
    Add(out, "cohort_checkpoint_last_save_seconds", "Duration of the newest completed save",
        MetricType::Gauge, c.last_seconds);
    const double age = collectives::OpCounters::SecondsSinceHeartbeat();
    if (age >= 0) {
      Add(out, "cohort_heartbeat_age_seconds",
          "Seconds since this worker last wrote its heartbeat to the store", MetricType::Gauge,
          age);
    }
    return out;
  }

 private:
  ClientMetric Metric(MetricType type, double value,
                      std::vector<ClientMetric::Label> labels = {}) const {
    ClientMetric m;
    m.label = std::move(labels);
    m.label.push_back({"rank", rank_});
    if (type == MetricType::Counter) m.counter.value = value;
    if (type == MetricType::Gauge) m.gauge.value = value;
    return m;
  }
  void Add(std::vector<MetricFamily>& out, const char* name, const char* help, MetricType type,
           double value) const {
    out.push_back({name, help, type, {Metric(type, value)}});
  }
  void AddCollectives(std::vector<MetricFamily>& out) const {
    MetricFamily ops{"cohort_collective_ops_total",
                     "Collective and point-to-point operations finished, by backend and op",
                     MetricType::Counter,
                     {}};
    MetricFamily bytes{"cohort_collective_bytes_total",
                       "Bytes of this rank's buffers moved by finished operations",
                       MetricType::Counter,
                       {}};
    MetricFamily seconds{"cohort_collective_seconds_total",
                         "Run time of finished operations, summed",
                         MetricType::Counter,
                         {}};
    for (const collectives::OpTotals& t : collectives::OpCounters::Snapshot()) {
      std::vector<ClientMetric::Label> labels = {{"backend", t.backend},
                                                 {"op", collectives::OpTypeName(t.type)}};
      ops.metric.push_back(Metric(MetricType::Counter, static_cast<double>(t.ops), labels));
      bytes.metric.push_back(Metric(MetricType::Counter, static_cast<double>(t.bytes), labels));
      seconds.metric.push_back(Metric(MetricType::Counter, t.seconds, labels));
    }
    if (ops.metric.empty()) return;
    out.push_back(std::move(ops));
    out.push_back(std::move(bytes));
    out.push_back(std::move(seconds));
  }

  const std::string rank_;
  const std::shared_ptr<DistributedDataParallel> ddp_;
};

prometheus::Gauge& NewGauge(prometheus::Registry& registry, const std::string& rank,
                            const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({{"rank", rank}});
}

}  // namespace

struct PrometheusSink::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<PulledMetrics> pulled;
  std::unique_ptr<MetricsServer> server;
  prometheus::Histogram* step_seconds = nullptr;
  prometheus::Gauge* loss = nullptr;
  prometheus::Gauge* samples_per_second = nullptr;
  prometheus::Gauge* step = nullptr;
  prometheus::Gauge* epoch = nullptr;
  prometheus::Gauge* straggler_ratio = nullptr;
  std::vector<double> buckets = StepSecondsBuckets();
  std::string rank;
  int64_t last_step = 0;

  // The report series appear with the first report, so that ranks that never get one (all but
  // rank 0) do not publish a loss of 0.
  void AddReportMetrics() {
    step_seconds = &prometheus::BuildHistogram()
                        .Name("cohort_step_seconds")
                        .Help("Compute time per training step (median over ranks, per report)")
                        .Register(*registry)
                        .Add({{"rank", rank}}, buckets);
    loss = &NewGauge(*registry, rank, "cohort_loss", "Training loss, mean over ranks");
    samples_per_second = &NewGauge(*registry, rank, "cohort_samples_per_second",
                                   "Training throughput of the whole job");
    step = &NewGauge(*registry, rank, "cohort_step", "Optimizer steps taken in total");
    epoch = &NewGauge(*registry, rank, "cohort_epoch", "Current epoch, from 0");
    straggler_ratio = &NewGauge(*registry, rank, "cohort_straggler_ratio",
                                "Slowest rank's step time over the median when over 1.2x, else 0");
  }
};

PrometheusSink::PrometheusSink(const std::string& host, int port, int rank,
                               std::shared_ptr<DistributedDataParallel> ddp, int64_t first_step)
    : impl_(std::make_unique<Impl>()) {
  const std::string r = std::to_string(rank);
  Impl& i = *impl_;
  i.rank = r;
  i.last_step = first_step;
  i.pulled = std::make_shared<PulledMetrics>(r, std::move(ddp));
  i.server = std::make_unique<MetricsServer>(host, port);  // throws Unavailable
  i.server->Register(i.registry);
  i.server->Register(i.pulled);
}

PrometheusSink::~PrometheusSink() = default;

void PrometheusSink::Write(const MetricsRecord& r) {
  Impl& i = *impl_;
  if (!i.loss) i.AddReportMetrics();
  // Reports come every progress interval, not every step: the interval's steps all land in the
  // bucket of its mean step time, so the histogram's count is the number of steps.
  const int64_t steps = std::max<int64_t>(r.step - i.last_step, 0);
  i.last_step = std::max(i.last_step, r.step);
  if (steps > 0) {
    std::vector<double> increments(i.buckets.size() + 1, 0.0);
    const size_t b = static_cast<size_t>(
        std::lower_bound(i.buckets.begin(), i.buckets.end(), r.step_seconds) - i.buckets.begin());
    increments[b] = static_cast<double>(steps);
    i.step_seconds->ObserveMultiple(increments, r.step_seconds * static_cast<double>(steps));
  }
  i.loss->Set(r.loss);
  i.samples_per_second->Set(r.samples_per_second);
  i.step->Set(static_cast<double>(r.step));
  i.epoch->Set(static_cast<double>(r.epoch));
  i.straggler_ratio->Set(r.straggler_rank >= 0 ? r.straggler_ratio : 0.0);
}

int PrometheusSink::port() const { return impl_->server->port(); }

#else  // built without prometheus-cpp

struct PrometheusSink::Impl {};
PrometheusSink::PrometheusSink(const std::string& host, int port, int,
                               std::shared_ptr<DistributedDataParallel>, int64_t) {
  throw Unavailable("cannot serve Prometheus metrics on " + host + ":" + std::to_string(port) +
                    ": cohort was built without prometheus-cpp; run scripts/setup and reconfigure");
}
PrometheusSink::~PrometheusSink() = default;
void PrometheusSink::Write(const MetricsRecord&) {}
int PrometheusSink::port() const { return 0; }

#endif

std::shared_ptr<PrometheusSink> PrometheusSink::FromEnv(
    std::shared_ptr<DistributedDataParallel> ddp, int64_t first_step) {
  if (!env::kMetricsPort.IsSet()) return nullptr;
  const int64_t base = env::kMetricsPort.Int(0);
  const int64_t port = base + env::kLocalRank.Int(0);
  if (base < 1 || port > 65535) {
    throw InvalidArgument("COHORT_METRICS_PORT=" + std::to_string(base) +
                          " (+ local rank) is not a port in 1..65535; set it to e.g. 9400");
  }
  try {
    auto sink = std::make_shared<PrometheusSink>("0.0.0.0", static_cast<int>(port),
                                                 static_cast<int>(env::kRank.Int(0)),
                                                 std::move(ddp), first_step);
    COHORT_INFO(kRuntime, "metrics: Prometheus /metrics on port {}", port);
    return sink;
  } catch (const Unavailable& e) {
    COHORT_WARN(kRuntime, "{}; training goes on without metrics", e.what());
    return nullptr;
  }
}

std::shared_ptr<PrometheusSink> ServeMetrics(Trainer& trainer,
                                             std::shared_ptr<DistributedDataParallel> ddp) {
  auto sink = PrometheusSink::FromEnv(std::move(ddp), trainer.State().step);
  if (sink) trainer.AddMetricsSink(sink);
  return sink;
}

}  // namespace cohort::runtime
