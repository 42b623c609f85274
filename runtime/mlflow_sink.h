// A training job's MLflow run (MLflow REST API 2.0, tracking/run_logger.h), as a MetricsSink of
// the Trainer: rank 0 opens or continues the run, logs the job's params and tags, every report's
// metrics (loss, samples_per_second, step_seconds, epoch; straggler_ratio when there is one) at
// its step, and at the end its status: FINISHED, FAILED with the error, or KILLED (SIGTERM).
// Every call is made off the training thread and retried; a server that is down or refuses
// changes nothing in training, and Close() returns one line saying what could not be delivered.
// Configured by MLflow's own variables: MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME,
// MLFLOW_RUN_ID, MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME / _PASSWORD. No libtorch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/metrics.h"

namespace cohort::tracking {
class RunLogger;
}

namespace cohort::runtime {

class ProcessGroup;
class Trainer;

// How a training job ended, for its tracking run.
enum class RunOutcome { kFinished, kFailed, kKilled };

class MlflowSink : public MetricsSink {
 public:
  using KeyValue = std::pair<std::string, std::string>;

  // nullptr unless rank is 0 and MLFLOW_TRACKING_URI is set. continue_run: the run a snapshot
  // recorded (TrainerState::tracking_run_id), which wins over MLFLOW_RUN_ID; "" for neither
  // (a new run). Tags get cohort.version, cohort.run_id (COHORT_RUN_ID) and, when the build
  // knows it, mlflow.source.git.commit added; params are
  // the job's flags and layout. Throws InvalidArgument for a tracking URI that is not http(s).
  static std::shared_ptr<MlflowSink> FromEnv(int rank, std::vector<KeyValue> params,
                                             std::vector<KeyValue> tags,
                                             const std::string& continue_run);
  ~MlflowSink() override;

  void Write(const MetricsRecord& record) override;
  // One more metric (e.g. the test accuracy at the end).
  void LogMetric(const std::string& key, double value, int64_t step);
  // The run's id once the logger opened it ("" before).
  std::string run_id() const;
  // Ends the run and returns the one-line delivery report (the logger also logs it, as a
  // warning when something was lost). Later calls return the same line.
  std::string Close(RunOutcome outcome, const std::string& error = "");

 private:
  explicit MlflowSink(std::unique_ptr<tracking::RunLogger> logger);
  MlflowSink(const MlflowSink&) = delete;
  MlflowSink& operator=(const MlflowSink&) = delete;
  std::unique_ptr<tracking::RunLogger> logger_;
  std::string closed_;
};

// A program's flags as MLflow params, from the "name=value" lines of a config dump (CLI11's
// App::config_to_str(true)); comments, sections and blank lines are skipped, quotes removed.
std::vector<MlflowSink::KeyValue> ParamsFromConfig(const std::string& config);

// Rank 0's MLflow run for trainer, after Resume (so that it continues the run the snapshot
// recorded): FromEnv plus the world's size and backend as params, added as a sink,
// with its run id recorded in the trainer's state. nullptr when there is no tracking server.
std::shared_ptr<MlflowSink> TrackTraining(Trainer& trainer, const ProcessGroup& world,
                                          std::vector<MlflowSink::KeyValue> params,
                                          std::vector<MlflowSink::KeyValue> tags = {});

}  // namespace cohort::runtime
