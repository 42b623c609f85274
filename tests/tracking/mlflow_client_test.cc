// MlflowClient and the shared HTTP layer against the MLflow double: experiments by name, runs,
// batches split at MLflow's limits, retries on 500/429 (Retry-After), refusals, rejections,
// exhausted retries, the registry, and configuration from MLflow's env names.
#include "tracking/mlflow_client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <set>

#include "common/error.h"
#include "common/http.h"
#include "common/net.h"
#include "tests/tracking/mlflow_double.h"
#include "tests/util/scoped_env.h"

namespace cohort::tracking {
namespace {

using testing::MlflowDouble;
using Clock = std::chrono::steady_clock;

MlflowConfig ConfigFor(const std::string& uri) {
  MlflowConfig c;
  c.tracking_uri = uri;
  c.backoff_initial_s = 0.01;
  c.backoff_max_s = 0.05;
  c.max_attempts = 4;
  return c;
}

Batch BigBatch(size_t metrics, size_t params, size_t tags, size_t value_chars = 8) {
  Batch b;
  for (size_t i = 0; i < metrics; ++i)
    b.metrics.push_back(
        Metric{"m" + std::to_string(i % 7), i * 0.5, 1000 + int64_t(i), int64_t(i)});
  for (size_t i = 0; i < params; ++i)
    b.params.push_back({"p" + std::to_string(i), std::string(value_chars, 'v')});
  for (size_t i = 0; i < tags; ++i)
    b.tags.push_back({"t" + std::to_string(i), std::string(value_chars, 'w')});
  return b;
}

TEST(MlflowBatch, SplitsAtEveryLimitAndKeepsOrder) {
  auto pieces = SplitBatch(BigBatch(2500, 250, 150));
  size_t m = 0, p = 0, t = 0;
  for (const Batch& piece : pieces) {
    EXPECT_LE(piece.metrics.size(), kMaxMetricsPerBatch);
    EXPECT_LE(piece.params.size(), kMaxParamsPerBatch);
    EXPECT_LE(piece.tags.size(), kMaxTagsPerBatch);
    EXPECT_LE(piece.size(), kMaxEntitiesPerBatch);
    EXPECT_LE(PythonJsonSize(BatchJson("0123456789abcdef0123456789abcdef", piece)), kMaxBatchBytes);
    for (const Metric& x : piece.metrics) EXPECT_EQ(x.step, int64_t(m++));
    for (const KeyValue& x : piece.params) EXPECT_EQ(x.first, "p" + std::to_string(p++));
    for (const KeyValue& x : piece.tags) EXPECT_EQ(x.first, "t" + std::to_string(t++));
  }
  EXPECT_EQ(m, 2500u);
  EXPECT_EQ(p, 250u);
  EXPECT_EQ(t, 150u);
  // 250 params need 3 requests, 2500 metrics (plus what fills up to 1000 in all) at least 3.
  EXPECT_GE(pieces.size(), 4u);
  // 100 params of 6000 characters and 100 tags of 5000 exceed 1 MB together: split by bytes.
  auto heavy = SplitBatch(BigBatch(0, 100, 100, 6000));
  ASSERT_EQ(heavy.size(), 2u);
  EXPECT_EQ(heavy[0].size() + heavy[1].size(), 200u);
  EXPECT_TRUE(SplitBatch(Batch()).empty());
}

TEST(MlflowBatch, JsonAsMlflowMeasuresAndSpellsIt) {
  // len(json.dumps({"a": [1, "\u00e9"]})) in Python is 20.
  EXPECT_EQ(PythonJsonSize(nlohmann::json::parse(R"({"a": [1, "\u00e9"]})")), 20u);
  EXPECT_EQ(MetricJson(Metric{"x", NAN, 5, 2})["value"], "NaN");
  EXPECT_EQ(MetricJson(Metric{"x", -INFINITY, 5, 2})["value"], "-Infinity");
  auto j = MetricJson(Metric{"loss", 0.25, 1700000000123, 7});
  EXPECT_EQ(j.dump(), R"({"key":"loss","step":7,"timestamp":1700000000123,"value":0.25})");
}

TEST(MlflowClient, ExperimentByNameRunAndSplitBatchLandExactly) {
  MlflowDouble server;
  MlflowClient client(ConfigFor(server.uri()));
  std::string exp = client.GetOrCreateExperiment("cohort-test");
  EXPECT_EQ(server.ExperimentId("cohort-test").value(), exp);
  EXPECT_EQ(client.GetOrCreateExperiment("cohort-test"), exp);  // found, not created twice
  EXPECT_EQ(server.Handled("experiments/create"), 1);
  std::string run = client.CreateRun(exp, 1234, {{"mlflow.runName", "r1"}});
  client.LogBatch(run, BigBatch(2500, 250, 150));
  client.SetTag(run, "stage", "done");
  client.UpdateRun(run, RunStatus::kFinished, 5678);
  auto got = server.Run(run).value();
  EXPECT_EQ(got.experiment_id, exp);
  EXPECT_EQ(got.status, "FINISHED");
  EXPECT_EQ(got.start_time, 1234);
  EXPECT_EQ(got.end_time, 5678);
  ASSERT_EQ(got.metrics.size(), 2500u);
  for (size_t i = 0; i < got.metrics.size(); ++i) {
    EXPECT_EQ(got.metrics[i].step, int64_t(i));
    EXPECT_EQ(got.metrics[i].value, i * 0.5);
    EXPECT_EQ(got.metrics[i].timestamp, 1000 + int64_t(i));
  }
  EXPECT_EQ(got.params.size(), 250u);
  EXPECT_EQ(got.params["p249"], "vvvvvvvv");
  EXPECT_EQ(got.tags.size(), 152u);  // 150 + mlflow.runName + stage
  EXPECT_EQ(got.tags["stage"], "done");
  EXPECT_GE(server.Handled("runs/log-batch"), 4);
  EXPECT_EQ(client.GetRunStatus(run), "FINISHED");
}

TEST(MlflowClient, RetriesInjected500And429HonouringRetryAfter) {
  MlflowDouble server;
  MlflowClient client(ConfigFor(server.uri()));
  std::string run = client.CreateRun(client.GetOrCreateExperiment("e"), 1, {});
  server.FailNext(2, 500, "runs/log-batch");
  server.FailNext(1, 429, "runs/log-batch", /*retry_after_s=*/1);
  auto start = Clock::now();
  client.LogBatch(run, BigBatch(10, 1, 1));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(950));  // waited the Retry-After
  EXPECT_EQ(server.Faults(), 3);
  EXPECT_EQ(client.retries(), 3u);
  auto got = server.Run(run).value();
  EXPECT_EQ(got.metrics.size(), 10u);  // once each: faults come before any change
  EXPECT_EQ(server.Handled("runs/log-batch"), 1);
}

TEST(MlflowClient, RefusalIsOneLineNamingServerAndIsNotRetried) {
  MlflowDouble server;
  server.RequireBearer("right-token");
  MlflowConfig c = ConfigFor(server.uri());
  c.token = "wrong-token";
  MlflowClient client(c);
  auto start = Clock::now();
  try {
    client.GetOrCreateExperiment("e");
    FAIL() << "a wrong token was accepted";
  } catch (const Unauthenticated& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("MLflow server " + server.uri() +
                       " refused GET "
                       "/api/2.0/mlflow/experiments/get-by-name: HTTP 401"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("MLFLOW_TRACKING_TOKEN"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_EQ(client.retries(), 0u);
  c.token = "right-token";
  EXPECT_EQ(MlflowClient(c).GetOrCreateExperiment("e"), "1");
  server.RequireBasic("alice", "s3cret");
  c.token.clear();
  c.username = "alice";
  c.password = "s3cret";
  EXPECT_EQ(MlflowClient(c).GetOrCreateExperiment("e"), "1");
  c.password = "nope";
  EXPECT_THROW(MlflowClient(c).GetOrCreateExperiment("e"), Unauthenticated);
}

TEST(MlflowClient, ExhaustedRetriesAreOneLineNamingServerMethodPathAndStatus) {
  MlflowDouble server;
  MlflowClient client(ConfigFor(server.uri()));
  std::string run = client.CreateRun("0", 1, {});
  server.FailNext(100, 503, "runs/update");
  try {
    client.UpdateRun(run, RunStatus::kFailed, 2);
    FAIL() << "passed through 503s";
  } catch (const Unavailable& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("MLflow server " + server.uri() +
                       " kept failing POST /api/2.0/mlflow/runs/update: HTTP 503"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("after 4 attempts"), std::string::npos) << msg;
  }
  EXPECT_EQ(server.Run(run)->status, "RUNNING");
  MlflowClient down(ConfigFor("http://127.0.0.1:" + std::to_string(net::FreePort())));
  try {
    down.GetOrCreateExperiment("e");
    FAIL() << "reached a closed port";
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach MLflow server http://127.0.0.1:"),
              std::string::npos)
        << e.what();
  }
}

// What the double rejects, sent raw through the HTTP layer, answers with MLflow's error JSON.
TEST(MlflowDouble, RejectsWrongTypesUnknownFieldsAndOverLimitBatchesAsMlflowDoes) {
  MlflowDouble server;
  http::Client raw(server.uri(), http::Auth::None(), http::Options());
  auto post = [&](const std::string& endpoint, const std::string& body) {
    http::Request r;
    r.method = "POST";
    r.target = "/api/2.0/mlflow/" + endpoint;
    r.headers = {"Content-Type: application/json"};
    r.SetBody(body);
    http::Response res = raw.Send(r);
    return std::make_pair(res.status, nlohmann::json::parse(res.body));
  };
  auto [s1, e1] = post("runs/log-batch", R"({"run_id": 5})");
  EXPECT_EQ(s1, 400);
  EXPECT_EQ(e1["error_code"], "INVALID_PARAMETER_VALUE");
  EXPECT_EQ(e1["message"],
            "Invalid value 5 for parameter 'run_id' supplied. Hint: Value was of type 'int'. See "
            "the API docs for more information about request parameters.");
  auto [s2, e2] = post("runs/create", R"({"experiment_id": "0", "start_tme": 1})");
  EXPECT_EQ(s2, 400);
  EXPECT_NE(e2["message"].get<std::string>().find("'start_tme'"), std::string::npos);
  auto [s3, e3] =
      post("runs/log-batch", R"({"run_id": "x", "metrics": [{"key": "a", "value": "high"}]})");
  EXPECT_EQ(s3, 400);
  EXPECT_NE(e3["message"].get<std::string>().find("metrics.value"), std::string::npos);
  auto [s4, e4] = post("runs/log-batch", R"({"metrics": []})");
  EXPECT_EQ(s4, 400);
  EXPECT_EQ(e4["message"],
            "Missing value for required parameter 'run_id'. See the API docs for more information "
            "about request parameters.");
  auto [s5, e5] = post("runs/update", R"({"run_id": "nope", "status": "DONE"})");
  EXPECT_EQ(s5, 400);  // not a RunStatus
  nlohmann::json big = BatchJson("x", BigBatch(1001, 0, 0));
  auto [s6, e6] = post("runs/log-batch", big.dump());
  EXPECT_EQ(s6, 400);
  EXPECT_NE(e6["message"].get<std::string>().find("at most 1000 metrics. Got 1001 metrics"),
            std::string::npos);
  auto [s7, e7] = post("runs/log-batch", R"({"run_id": "nope"})");
  EXPECT_EQ(s7, 404);
  EXPECT_EQ(e7["error_code"], "RESOURCE_DOES_NOT_EXIST");
  EXPECT_EQ(server.Handled("runs/create"), 0);
  // Through the client, a rejection is one line with MLflow's code and message.
  MlflowClient client(ConfigFor(server.uri()));
  try {
    client.LogBatch("nope", BigBatch(1, 0, 0));
    FAIL() << "logged into a missing run";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("rejected POST /api/2.0/mlflow/runs/log-batch: HTTP 404 "
                                         "RESOURCE_DOES_NOT_EXIST: Run with id=nope not found"),
              std::string::npos)
        << e.what();
  }
}

TEST(MlflowClient, NonFiniteMetricsGoAsProtobufSpellsThem) {
  MlflowDouble server;
  MlflowClient client(ConfigFor(server.uri()));
  std::string run = client.CreateRun("0", 1, {});
  Batch b;
  b.metrics = {{"loss", NAN, 1, 0}, {"loss", INFINITY, 2, 1}, {"loss", 1.5, 3, 2}};
  client.LogBatch(run, b);
  auto got = server.Run(run).value();
  ASSERT_EQ(got.metrics.size(), 3u);
  EXPECT_TRUE(std::isnan(got.metrics[0].value));
  EXPECT_TRUE(std::isinf(got.metrics[1].value));
  EXPECT_EQ(got.metrics[2].value, 1.5);
}

TEST(MlflowClient, RegistryCreatesModelOnceAddsVersionsAndMovesAlias) {
  MlflowDouble server;
  MlflowClient client(ConfigFor(server.uri() + "/"));
  std::string run = client.CreateRun("0", 1, {});
  EXPECT_TRUE(client.EnsureRegisteredModel("fmnist"));
  EXPECT_FALSE(client.EnsureRegisteredModel("fmnist"));  // present: not created again
  EXPECT_EQ(server.Handled("registered-models/create"), 1);
  ModelVersion v1 =
      client.CreateModelVersion("fmnist", "s3://models/fmnist/1", run, {{"test_accuracy", "0.9"}});
  EXPECT_EQ(v1.version, "1");
  EXPECT_EQ(v1.source, "s3://models/fmnist/1");
  EXPECT_EQ(v1.run_id, run);
  ModelVersion v2 = client.CreateModelVersion("fmnist", "s3://models/fmnist/2", run, {});
  EXPECT_EQ(v2.version, "2");
  client.SetAlias("fmnist", "candidate", "1");
  EXPECT_EQ(server.Model("fmnist")->aliases.at("candidate"), "1");
  client.SetAlias("fmnist", "candidate", "2");  // moved
  client.SetAlias("fmnist", "champion", "1");
  auto model = server.Model("fmnist").value();
  EXPECT_EQ(model.aliases.at("candidate"), "2");
  EXPECT_EQ(model.aliases.at("champion"), "1");
  ASSERT_EQ(model.versions.size(), 2u);
  EXPECT_EQ(model.versions[0].run_id, run);
  EXPECT_EQ(model.versions[0].tags.at("test_accuracy"), "0.9");
  EXPECT_THROW(client.SetAlias("fmnist", "candidate", "9"), InvalidArgument);
  EXPECT_THROW(client.CreateModelVersion("absent", "s3://x", run, {}), InvalidArgument);
}

TEST(MlflowConfig, ReadsMlflowsOwnEnvNames) {
  using cohort::testing::ScopedEnv;
  {
    ScopedEnv env({{"MLFLOW_TRACKING_URI", std::nullopt}});
    EXPECT_FALSE(MlflowConfig::FromEnv().has_value());
  }
  {
    ScopedEnv env({{"MLFLOW_TRACKING_URI", "http://mlflow:5000/prefix"},
                   {"MLFLOW_EXPERIMENT_NAME", "exp"},
                   {"MLFLOW_RUN_ID", "abc"},
                   {"MLFLOW_TRACKING_TOKEN", "tok"},
                   {"MLFLOW_TRACKING_USERNAME", "u"},
                   {"MLFLOW_TRACKING_PASSWORD", "p"}});
    MlflowConfig c = MlflowConfig::FromEnv().value();
    EXPECT_EQ(c.tracking_uri, "http://mlflow:5000/prefix");
    EXPECT_EQ(c.experiment_name, "exp");
    EXPECT_EQ(c.run_id, "abc");
    EXPECT_EQ(c.token, "tok");
    EXPECT_EQ(c.username, "u");
    EXPECT_EQ(c.password, "p");
  }
  {
    ScopedEnv env(
        {{"MLFLOW_TRACKING_URI", "file:///tmp/mlruns"}, {"MLFLOW_EXPERIMENT_NAME", std::nullopt}});
    EXPECT_THROW(MlflowConfig::FromEnv(), InvalidArgument);
  }
}

TEST(HttpLayer, BackoffGrowsWithJitterAndHonoursRetryAfter) {
  http::Options o;
  o.backoff_initial_s = 0.1;
  o.backoff_max_s = 1;
  o.max_retry_after_s = 30;
  for (int i = 0; i < 50; ++i) {
    double b0 = http::BackoffSeconds(o, 0, -1), b3 = http::BackoffSeconds(o, 3, -1);
    EXPECT_GE(b0, 0.05);
    EXPECT_LE(b0, 0.1);
    EXPECT_GE(b3, 0.4);
    EXPECT_LE(b3, 0.8);
    EXPECT_LE(http::BackoffSeconds(o, 30, -1), 1.0);
  }
  EXPECT_EQ(http::BackoffSeconds(o, 0, 7), 7);
  EXPECT_EQ(http::BackoffSeconds(o, 0, 100), 30);  // capped
  EXPECT_EQ(http::ParseRetryAfter("3"), 3);
  EXPECT_EQ(http::ParseRetryAfter(""), -1);
  EXPECT_EQ(http::ParseRetryAfter("soon"), -1);
  EXPECT_EQ(http::ParseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT"), 0);  // in the past
  EXPECT_THROW(http::Client("ftp://x", http::Auth::None(), http::Options()), InvalidArgument);
}

}  // namespace
}  // namespace cohort::tracking
