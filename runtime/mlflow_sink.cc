#include "runtime/mlflow_sink.h"

#include <sstream>

#include "common/env.h"
#include "common/log.h"
#include "runtime/process_group.h"
#include "runtime/trainer.h"
#include "tracking/run_logger.h"

namespace cohort::runtime {

std::vector<MlflowSink::KeyValue> ParamsFromConfig(const std::string& config) {
  std::vector<MlflowSink::KeyValue> params;
  std::istringstream in(config);
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find('=');
    if (line.empty() || line[0] == '#' || line[0] == '[' || eq == std::string::npos) continue;
    auto trim = [](std::string s) {
      const size_t b = s.find_first_not_of(" \t\"'"), e = s.find_last_not_of(" \t\"'");
      return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    params.emplace_back(trim(line.substr(0, eq)), trim(line.substr(eq + 1)));
  }
  return params;
}

std::shared_ptr<MlflowSink> TrackTraining(Trainer& trainer, const ProcessGroup& world,
                                          std::vector<MlflowSink::KeyValue> params,
                                          std::vector<MlflowSink::KeyValue> tags) {
  params.emplace_back("world_size", std::to_string(world.Size()));
  params.emplace_back("backend", world.Backend());
  auto sink = MlflowSink::FromEnv(world.Rank(), std::move(params), std::move(tags),
                                  trainer.State().tracking_run_id);
  if (!sink) return nullptr;
  trainer.AddMetricsSink(sink);
  trainer.SetTrackingRun([s = sink.get()] { return s->run_id(); });
  return sink;
}

std::shared_ptr<MlflowSink> MlflowSink::FromEnv(int rank, std::vector<KeyValue> params,
                                                std::vector<KeyValue> tags,
                                                const std::string& continue_run) {
  if (rank != 0) return nullptr;
  std::optional<tracking::MlflowConfig> config = tracking::MlflowConfig::FromEnv();
  if (!config) return nullptr;
  if (!continue_run.empty()) config->run_id = continue_run;
  tags.emplace_back("cohort.version", COHORT_VERSION);
  if (*COHORT_GIT_COMMIT) tags.emplace_back("mlflow.source.git.commit", COHORT_GIT_COMMIT);
  const std::string job = env::kRunId.Str("");
  if (!job.empty()) tags.emplace_back("cohort.run_id", job);
  COHORT_INFO(kRuntime, "tracking: MLflow at {}, experiment '{}'{}", config->tracking_uri,
              config->experiment_name,
              config->run_id.empty() ? "" : ", continuing run " + config->run_id);
  auto logger = std::make_unique<tracking::RunLogger>(*config);
  logger->Start(std::move(params), std::move(tags));
  return std::shared_ptr<MlflowSink>(new MlflowSink(std::move(logger)));
}

MlflowSink::MlflowSink(std::unique_ptr<tracking::RunLogger> logger) : logger_(std::move(logger)) {}

MlflowSink::~MlflowSink() = default;  // an unclosed logger ends its run KILLED

void MlflowSink::Write(const MetricsRecord& r) {
  logger_->LogMetric("loss", r.loss, r.step);
  logger_->LogMetric("samples_per_second", r.samples_per_second, r.step);
  logger_->LogMetric("step_seconds", r.step_seconds, r.step);
  logger_->LogMetric("epoch", static_cast<double>(r.epoch), r.step);
  if (r.straggler_rank >= 0) {
    logger_->LogMetric("straggler_ratio", r.straggler_ratio, r.step);
    logger_->SetTag("cohort.straggler", "rank " + std::to_string(r.straggler_rank) + " on node " +
                                            std::to_string(r.straggler_node));
  }
}

void MlflowSink::LogMetric(const std::string& key, double value, int64_t step) {
  logger_->LogMetric(key, value, step);
}

std::string MlflowSink::run_id() const { return logger_->run_id(); }

std::string MlflowSink::Close(RunOutcome outcome, const std::string& error) {
  if (!closed_.empty()) return closed_;
  const tracking::RunStatus status =
      outcome == RunOutcome::kFinished ? tracking::RunStatus::kFinished
      : outcome == RunOutcome::kFailed ? tracking::RunStatus::kFailed
                                       : tracking::RunStatus::kKilled;
  closed_ = logger_->Close(status, error);  // which logs the line (a warning when incomplete)
  return closed_;
}

}  // namespace cohort::runtime
