// RunLogger against the MLflow double: everything lands once, even through injected 500s and
// 429s; the final status; refusals and a server down the whole time never block the caller and
// end in one line saying what was lost; a continued run; the bounded buffer.
#include "tracking/run_logger.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>

#include "common/net.h"
#include "tests/tracking/mlflow_double.h"

namespace cohort::tracking {
namespace {

using testing::FakeRun;
using testing::MlflowDouble;
using Clock = std::chrono::steady_clock;

MlflowConfig ConfigFor(const std::string& uri) {
  MlflowConfig c;
  c.tracking_uri = uri;
  c.experiment_name = "cohort-logger";
  c.backoff_initial_s = 0.01;
  c.backoff_max_s = 0.05;
  c.max_attempts = 3;
  c.connect_timeout_s = 1;
  return c;
}

RunLoggerOptions FastOptions() {
  RunLoggerOptions o;
  o.flush_interval_s = 0.05;
  o.retry_pause_s = 0.05;
  o.close_timeout_s = 5;
  return o;
}

const std::vector<KeyValue> kParams = {
    {"batch_size", "64"}, {"world_size", "2"}, {"backend", "gloo"}};
const std::vector<KeyValue> kTags = {{"cohort.version", "0.1.0"}, {"mlflow.runName", "t"}};

// Logs `n` values of two metrics, step by step, and returns the slowest single call.
std::chrono::nanoseconds LogSteps(RunLogger* logger, int n) {
  std::chrono::nanoseconds slowest{0};
  for (int step = 0; step < n; ++step) {
    auto start = Clock::now();
    logger->LogMetric("loss", 1.0 / (step + 1), step, 1700000000000 + step);
    logger->LogMetric("samples_per_s", 100.0 + step, step, 1700000000000 + step);
    slowest = std::max(slowest, std::chrono::nanoseconds(Clock::now() - start));
  }
  return slowest;
}

// Each (key, step) exactly once, with its value.
void ExpectEachStepOnce(const FakeRun& run, int n) {
  std::map<std::pair<std::string, int64_t>, int> seen;
  for (const auto& m : run.metrics) {
    seen[{m.key, m.step}]++;
    double want = m.key == "loss" ? 1.0 / (m.step + 1) : 100.0 + m.step;
    EXPECT_DOUBLE_EQ(m.value, want) << m.key;
    EXPECT_EQ(m.timestamp, 1700000000000 + m.step);
  }
  EXPECT_EQ(run.metrics.size(), size_t(2 * n));
  EXPECT_EQ(seen.size(), size_t(2 * n));
  for (const auto& [key, count] : seen) EXPECT_EQ(count, 1) << key.first << " " << key.second;
}

FakeRun OnlyRun(const MlflowDouble& server) {
  auto runs = server.Runs();
  EXPECT_EQ(runs.size(), 1u);
  return runs.empty() ? FakeRun() : runs.front();
}

TEST(RunLogger, RunParamsTagsMetricsAndStatusLandOnce) {
  MlflowDouble server;
  RunLogger logger(ConfigFor(server.uri()), FastOptions());
  logger.Start(kParams, kTags);
  LogSteps(&logger, 1500);  // 3000 values: several log-batch requests
  logger.SetTag("phase", "eval");
  std::string line = logger.Close(RunStatus::kFinished);
  FakeRun run = OnlyRun(server);
  EXPECT_EQ(run.experiment_id, server.ExperimentId("cohort-logger").value());
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_GT(run.end_time, 0);
  EXPECT_EQ(run.params, (std::map<std::string, std::string>(kParams.begin(), kParams.end())));
  EXPECT_EQ(run.tags.at("cohort.version"), "0.1.0");
  EXPECT_EQ(run.tags.at("phase"), "eval");
  ExpectEachStepOnce(run, 1500);
  EXPECT_GE(server.Handled("runs/log-batch"), 3);
  EXPECT_EQ(logger.run_id(), run.run_id);
  EXPECT_TRUE(logger.report().complete());
  EXPECT_EQ(line, "MLflow server " + server.uri() + ": run " + run.run_id +
                      " has 3 params, 3 tags, 3000 metric values and status FINISHED");
}

TEST(RunLogger, InjectedFailuresAndThrottlingLoseAndDuplicateNothing) {
  MlflowDouble server;
  server.FailNext(2, 500, "runs/create");
  server.FailNext(1, 429, "runs/log-batch", /*retry_after_s=*/0);
  server.FailRandomly(0.3, /*seed=*/7);
  RunLogger logger(ConfigFor(server.uri()), FastOptions());
  logger.Start(kParams, kTags);
  LogSteps(&logger, 1200);
  std::string line = logger.Close(RunStatus::kFinished);
  EXPECT_GT(server.Faults(), 5);
  FakeRun run = OnlyRun(server);
  ExpectEachStepOnce(run, 1200);
  EXPECT_EQ(run.params.size(), 3u);
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_TRUE(logger.report().complete()) << line;
}

TEST(RunLogger, FailedRunCarriesItsError) {
  MlflowDouble server;
  RunLogger logger(ConfigFor(server.uri()), FastOptions());
  logger.Start({}, {});
  logger.LogMetric("loss", 2.5, 0);
  logger.Close(RunStatus::kFailed, "loss became NaN at step 17");
  FakeRun run = OnlyRun(server);
  EXPECT_EQ(run.status, "FAILED");
  EXPECT_EQ(run.tags.at("cohort.error"), "loss became NaN at step 17");
  ASSERT_EQ(run.metrics.size(), 1u);
  EXPECT_EQ(run.metrics[0].value, 2.5);
  EXPECT_GT(run.metrics[0].timestamp, 1600000000000);  // "now" when not given
}

TEST(RunLogger, DestroyedWithoutCloseEndsTheRunKilled) {
  MlflowDouble server;
  {
    RunLogger logger(ConfigFor(server.uri()), FastOptions());
    logger.Start({}, {});
  }
  EXPECT_EQ(OnlyRun(server).status, "KILLED");
}

TEST(RunLogger, RefusalStopsAtOnceWithOneLineNamingTheServer) {
  MlflowDouble server;
  server.RequireBearer("right");
  MlflowConfig c = ConfigFor(server.uri());
  c.token = "wrong";
  RunLogger logger(c, FastOptions());
  logger.Start(kParams, kTags);
  LogSteps(&logger, 100);
  auto start = Clock::now();
  std::string line = logger.Close(RunStatus::kFinished);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(server.Runs().empty());
  EXPECT_NE(line.find("refused GET /api/2.0/mlflow/experiments/get-by-name: HTTP 401"),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("MLflow server " + server.uri()), std::string::npos) << line;
  EXPECT_NE(line.find("not delivered: 200 of 200 metric values, 3 of 3 params, 2 of 2 tags"),
            std::string::npos)
      << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(RunLogger, ServerDownTheWholeTimeNeverBlocksAndCloseSaysWhatWasLost) {
  const std::string uri = "http://127.0.0.1:" + std::to_string(net::FreePort());  // nothing there
  RunLoggerOptions o = FastOptions();
  o.close_timeout_s = 1;
  RunLogger logger(ConfigFor(uri), o);
  auto start = Clock::now();
  logger.Start(kParams, kTags);
  auto slowest = LogSteps(&logger, 5000);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_LT(slowest, std::chrono::milliseconds(50));
  auto closing = Clock::now();
  std::string line = logger.Close(RunStatus::kFinished);
  EXPECT_LT(Clock::now() - closing, std::chrono::seconds(3));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.rfind("MLflow server " + uri +
                           ": run (not opened): not delivered: 10000 of "
                           "10000 metric values, 3 of 3 params, 2 of 2 tags, status FINISHED; last "
                           "error: cannot reach MLflow server " +
                           uri,
                       0),
            0u)
      << line;
  DeliveryReport r = logger.report();
  EXPECT_EQ(r.metrics_lost, 10000u);
  EXPECT_FALSE(r.complete());
}

TEST(RunLogger, SlowServerDoesNotSlowTheCaller) {
  MlflowDouble server;
  server.SetDelay(0.2);
  RunLogger logger(ConfigFor(server.uri()), FastOptions());
  logger.Start(kParams, {});
  auto slowest = LogSteps(&logger, 300);
  EXPECT_LT(slowest, std::chrono::milliseconds(50));
  std::string line = logger.Close(RunStatus::kFinished);
  ExpectEachStepOnce(OnlyRun(server), 300);
  EXPECT_TRUE(logger.report().complete()) << line;
}

TEST(RunLogger, CloseAbortsCallsStuckOnAServerThatStoppedAnswering) {
  MlflowDouble server;
  server.SetDelay(2);  // each answer takes longer than Close() may wait
  RunLoggerOptions o = FastOptions();
  o.close_timeout_s = 0.3;
  RunLogger logger(ConfigFor(server.uri()), o);
  logger.Start(kParams, {});
  LogSteps(&logger, 10);
  auto closing = Clock::now();
  std::string line = logger.Close(RunStatus::kFinished);
  EXPECT_LT(Clock::now() - closing, std::chrono::milliseconds(1500));
  EXPECT_NE(line.find("not delivered: 20 of 20 metric values, 3 of 3 params"), std::string::npos)
      << line;
  EXPECT_FALSE(logger.report().complete());
}

TEST(RunLogger, FullBufferDropsNewRecordsAndCountsThem) {
  const std::string uri = "http://127.0.0.1:" + std::to_string(net::FreePort());
  RunLoggerOptions o = FastOptions();
  o.max_pending = 100;
  o.close_timeout_s = 0.5;
  RunLogger logger(ConfigFor(uri), o);
  logger.Start({}, {});
  LogSteps(&logger, 500);
  logger.Close(RunStatus::kKilled);
  EXPECT_EQ(logger.report().metrics_lost, 1000u);
  EXPECT_EQ(logger.report().metrics_sent, 0u);
}

TEST(RunLogger, ContinuesTheRunItIsGiven) {
  MlflowDouble server;
  MlflowClient client(ConfigFor(server.uri()));
  std::string run_id = client.CreateRun(client.GetOrCreateExperiment("cohort-logger"), 1, {});
  client.UpdateRun(run_id, RunStatus::kKilled, 2);  // the attempt before a restart
  MlflowConfig c = ConfigFor(server.uri());
  c.run_id = run_id;
  RunLogger logger(c, FastOptions());
  logger.Start(kParams, {{"restart", "1"}});
  logger.LogMetric("loss", 0.5, 10, 5);
  std::string line = logger.Close(RunStatus::kFinished);
  FakeRun run = OnlyRun(server);
  EXPECT_EQ(run.run_id, run_id);
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_EQ(run.tags.at("restart"), "1");
  EXPECT_EQ(run.metrics.size(), 1u);
  EXPECT_EQ(server.Handled("runs/create"), 1);  // only ours, above
  EXPECT_TRUE(logger.report().complete()) << line;
}

}  // namespace
}  // namespace cohort::tracking
