// The Trainer's reports (rank 0, one per progress interval) go to MetricsSinks: one
// implementation per destination (JSON lines here, MLflow in runtime/mlflow_sink.h), so a new
// destination is one class, not another branch in the loop.
//
// MetricsWriter: training metrics as JSON lines, one object per report, flushed as written so
// that `tail -f` and a crash both see every finished line:
//   {"step":120,"epoch":0,"loss":0.512,"samples_per_second":3412.0,"time":4.21,
//    "step_seconds":0.031,"timestamp":...}
// step: optimizer steps taken in total; epoch: 0-based (TrainerState's); loss: mean over ranks
// and over the steps since the previous line; time: seconds since Fit began; step_seconds: the
// median over ranks of each rank's mean compute time per step since the previous line (time in
// the step function less DDP's exposed wait); with a straggler (a rank over 1.2x that median)
// also "straggler_rank", "straggler_node" and "straggler_ratio"; in ps async mode
// "ps_staleness". timestamp: Unix seconds. No
// libtorch here.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace cohort::runtime {

struct MetricsRecord {
  int64_t step = 0;
  int64_t epoch = 0;
  double loss = 0;
  double samples_per_second = 0;
  double time = 0;
  double step_seconds = 0;  // median over ranks of the mean compute time per step
  int straggler_rank = -1;  // the slowest rank when it is over 1.2x the median; else -1
  int straggler_node = -1;
  double straggler_ratio = 0;  // its time / the median
  // ps async mode: the largest (fastest worker's clock - slowest's) in rank 0's answers from the
  // servers since the previous report, in steps pushed; -1 (not written) otherwise. Under SSP
  // with bound s it is at most s + 1: a worker's push counts before its pull waits.
  double ps_staleness = -1;
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  // One report. Must not block training for long nor throw for a destination's failure (log it
  // and go on: metrics are not worth a lost run).
  virtual void Write(const MetricsRecord& record) = 0;
};

class MetricsWriter : public MetricsSink {
 public:
  // Opens path (truncating it, or appending to it for a resumed run). Throws InvalidArgument
  // naming the path and the reason when it cannot be opened for writing.
  MetricsWriter(const std::string& path, bool append);
  ~MetricsWriter() override;
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Appends one line. A failed write (disk full) is logged once and training goes on: metrics
  // are not worth a lost run.
  void Write(const MetricsRecord& record) override;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  bool warned_ = false;
};

}  // namespace cohort::runtime
