// Prometheus metrics of a training worker, served at http://<host>:<port>/metrics with
// prometheus-cpp's registry and text format (Debian's prometheus-cpp-dev; the HTTP server is
// common/metrics_server.h, which says why) when COHORT_METRICS_PORT is set: each worker
// serves port + COHORT_LOCAL_RANK, so the workers of a node never collide (the launcher serves
// port - 1, launcher/launcher_metrics.h). Every series carries the label rank="<global rank>".
//
// From the Trainer's reports (rank 0 only, one per progress interval; runtime/metrics.h):
//   cohort_step_seconds          histogram of compute time per step; each report adds its steps
//                                at the report's median-over-ranks mean step time
//   cohort_loss, cohort_samples_per_second, cohort_step, cohort_epoch   gauges
//   cohort_straggler_ratio       gauge, the slowest rank's time / the median (0: no straggler)
// Read at scrape time, on every rank:
//   cohort_collective_ops_total, _bytes_total, _seconds_total {backend, op}   counters
//                                (collectives/op_counters.h: every finished op of this process)
//   cohort_ddp_communication_seconds_total, cohort_ddp_exposed_communication_seconds_total
//   cohort_checkpoint_saves_total, _save_failures_total, _save_bytes_total, _save_seconds_total,
//   cohort_checkpoint_last_save_seconds                  (checkpoint/save_stats.h)
//   cohort_heartbeat_age_seconds  seconds since this worker last wrote its heartbeat
// A port that cannot be bound is one warning and no metrics: metrics are not worth a lost run.
// No libtorch here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/metrics.h"

namespace cohort::runtime {

class DistributedDataParallel;
class Trainer;

class PrometheusSink : public MetricsSink {
 public:
  // nullptr when COHORT_METRICS_PORT is unset, or (with a warning naming the port and the fix)
  // when the port cannot be served or cohort was built without prometheus-cpp. ddp may be null.
  // first_step: the step training starts from (after a resume), so that the histogram counts
  // only the steps this process ran. Throws InvalidArgument for a port outside 1..65535.
  static std::shared_ptr<PrometheusSink> FromEnv(std::shared_ptr<DistributedDataParallel> ddp,
                                                 int64_t first_step = 0);
  // Serves on host:port (host "0.0.0.0": every interface; port 0 picks a free one), labelling
  // every series rank="<rank>". Throws Unavailable naming the address when it cannot be bound.
  PrometheusSink(const std::string& host, int port, int rank,
                 std::shared_ptr<DistributedDataParallel> ddp, int64_t first_step = 0);
  ~PrometheusSink() override;
  PrometheusSink(const PrometheusSink&) = delete;
  PrometheusSink& operator=(const PrometheusSink&) = delete;

  void Write(const MetricsRecord& record) override;
  // The port /metrics is served on.
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Bucket bounds of cohort_step_seconds, in seconds (1 ms to 60 s).
std::vector<double> StepSecondsBuckets();

// PrometheusSink::FromEnv for trainer's job, after Resume, added to the trainer as a sink.
// nullptr when COHORT_METRICS_PORT is unset (or the port cannot be served).
std::shared_ptr<PrometheusSink> ServeMetrics(Trainer& trainer,
                                             std::shared_ptr<DistributedDataParallel> ddp);

}  // namespace cohort::runtime
