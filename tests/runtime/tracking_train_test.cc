// A training job's MLflow run, end to end: fashion_mnist under `cohort launch` against the
// MLflow double (tests/tracking/mlflow_double.h, MLflow's REST API over HTTP). Asserted: the run
// in its experiment with every flag as a param, world size and backend, cohort's tags; every
// report's loss logged exactly once (also through injected 500s and 429s) and equal to the
// JSON-lines metrics; the test accuracy; FINISHED, FAILED with the error, KILLED on SIGTERM; a
// resumed job continuing the same run; a server down the whole time changing nothing in
// training and ending with one line.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "tests/tracking/mlflow_double.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using tracking::testing::FakeRun;
using tracking::testing::MlflowDouble;
using Env = std::map<std::string, std::string>;

class TrackedTraining : public ::testing::Test {
 protected:
  Env TrackingEnv(const std::string& uri) const {
    return {{"MLFLOW_TRACKING_URI", uri},  {"MLFLOW_EXPERIMENT_NAME", "cohort-test"},
            {"MLFLOW_RUN_ID", ""},         {"COHORT_LOG_LEVEL", "info"},
            {"OPENBLAS_NUM_THREADS", "1"}, {"OMP_NUM_THREADS", "1"},
            {"COHORT_CHECKPOINT_URI", ""}, {"COHORT_RESUME", ""}};
  }
  std::unique_ptr<Subprocess> Start(int n, std::vector<std::string> flags, const Env& env) {
    std::vector<std::string> argv = {BinPath("cohort"),
                                     "launch",
                                     "--nproc-per-node",
                                     std::to_string(n),
                                     "--run-id",
                                     "job1",
                                     "--",
                                     BinPath("fashion_mnist"),
                                     "--progress-interval",
                                     "0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return std::make_unique<Subprocess>(argv, env);
  }
  ProcessResult Run(int n, std::vector<std::string> flags, const Env& env) {
    return Start(n, std::move(flags), env)->Wait(180s);
  }
  std::string Path(const std::string& name) const { return dir_.File(name); }

  TestDir dir_{"tracking"};
};

// The values logged under key, by step; fails on a step logged twice.
std::map<int64_t, double> Series(const FakeRun& run, const std::string& key) {
  std::map<int64_t, double> out;
  for (const auto& m : run.metrics) {
    if (m.key != key) continue;
    EXPECT_FALSE(out.count(m.step)) << key << " at step " << m.step << " logged twice";
    out[m.step] = m.value;
  }
  return out;
}

TEST_F(TrackedTraining, FinishedRunHoldsParamsTagsAndEveryReportOnce) {
  MlflowDouble mlflow;
  mlflow.FailRandomly(0.2, 7);  // 500s and 429s: retried, never doubled
  const ProcessResult r =
      Run(2, {"--max-steps", "12", "--metrics", Path("m.jsonl")}, TrackingEnv(mlflow.uri()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(mlflow.ExperimentId("cohort-test").has_value());
  const std::vector<FakeRun> runs = mlflow.Runs();
  ASSERT_EQ(runs.size(), 1u) << "only rank 0 logs";
  const FakeRun& run = runs[0];
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_EQ(run.params.at("max-steps"), "12");
  EXPECT_EQ(run.params.at("batch-size"), "64");
  EXPECT_EQ(run.params.at("optimizer"), "adam");
  EXPECT_EQ(run.params.at("world_size"), "2");
  EXPECT_EQ(run.params.at("backend"), "gloo");
  EXPECT_EQ(run.tags.at("cohort.run_id"), "job1");
  EXPECT_FALSE(run.tags.at("cohort.version").empty());
  EXPECT_EQ(run.tags.at("mlflow.source.git.commit").size(), 40u);  // built from a git checkout
  const auto loss = Series(run, "loss");
  std::ifstream in(Path("m.jsonl"));
  std::map<int64_t, double> want;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    want[j.at("step").get<int64_t>()] = j.at("loss").get<double>();
  }
  ASSERT_EQ(want.size(), 12u);
  ASSERT_EQ(loss.size(), want.size());
  for (const auto& [step, value] : want) EXPECT_DOUBLE_EQ(loss.at(step), value) << step;
  EXPECT_EQ(Series(run, "samples_per_second").size(), 12u);
  const auto accuracy = Series(run, "test_accuracy");
  ASSERT_EQ(accuracy.size(), 1u);
  EXPECT_GT(accuracy.begin()->second, 0.2);
  EXPECT_GT(mlflow.Faults(), 0) << "the faults were meant to happen";
}

TEST_F(TrackedTraining, RegisterPublishesTheModelUnderTheRun) {
  MlflowDouble mlflow;
  const std::string repo = dir_.Uri("models");
  const ProcessResult r =
      Run(2, {"--max-steps", "10", "--register", "fmnist", "--model-repo", repo},
          TrackingEnv(mlflow.uri()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "models" / "fmnist" / "1" / "model.pt"));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "models" / "fmnist" / "config.pbtxt"));
  const auto model = mlflow.Model("fmnist");
  ASSERT_TRUE(model.has_value()) << r.output;
  ASSERT_EQ(model->versions.size(), 1u);
  const std::vector<FakeRun> runs = mlflow.Runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(model->versions[0].run_id, runs[0].run_id);
  EXPECT_EQ(model->versions[0].source, repo + "/fmnist/1/model.pt");
  EXPECT_TRUE(model->versions[0].tags.count("test_accuracy"));
  EXPECT_EQ(model->aliases.at("candidate"), model->versions[0].version);
  EXPECT_EQ(runs[0].status, "FINISHED");
}

TEST_F(TrackedTraining, AFailureEndsTheRunFailedWithTheError) {
  MlflowDouble mlflow;
  const ProcessResult r = Run(1, {"--max-steps", "3", "--checkpoint-uri", "file:///proc/cohort-x"},
                              TrackingEnv(mlflow.uri()));
  EXPECT_NE(r.exit_code, 0) << r.output;
  const std::vector<FakeRun> runs = mlflow.Runs();
  ASSERT_EQ(runs.size(), 1u) << r.output;
  EXPECT_EQ(runs[0].status, "FAILED");
  EXPECT_NE(runs[0].tags.at("cohort.error").find("/proc/cohort-x"), std::string::npos)
      << runs[0].tags.at("cohort.error");
}

TEST_F(TrackedTraining, SigtermEndsKilledAndTheResumedJobContinuesTheRun) {
  MlflowDouble mlflow;
  const std::string ckpt = "file://" + Path("ckpt");
  auto first =
      Start(1, {"--max-steps", "400", "--checkpoint-uri", ckpt}, TrackingEnv(mlflow.uri()));
  ASSERT_TRUE(first->AwaitLine("epoch 1/2 step 20/", 120s)) << first->Output();
  first->Kill(SIGTERM);
  const ProcessResult stopped = first->Wait(60s);
  EXPECT_NE(stopped.exit_code, 0) << stopped.output;
  std::vector<FakeRun> runs = mlflow.Runs();
  ASSERT_EQ(runs.size(), 1u) << stopped.output;
  EXPECT_EQ(runs[0].status, "KILLED");
  const std::string id = runs[0].run_id;
  const size_t logged = Series(runs[0], "loss").size();

  // As the launcher restarts a group: the same flags, COHORT_RESUME=latest (so the continued
  // run's params are the same; MLflow refuses a param whose value changes).
  Env env = TrackingEnv(mlflow.uri());
  env["COHORT_RESUME"] = "latest";
  const ProcessResult resumed = Run(1, {"--max-steps", "400", "--checkpoint-uri", ckpt}, env);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  runs = mlflow.Runs();
  ASSERT_EQ(runs.size(), 1u) << "a resumed job continues its run\n" << resumed.output;
  EXPECT_EQ(runs[0].run_id, id);
  EXPECT_EQ(runs[0].status, "FINISHED") << resumed.output;
  EXPECT_GT(Series(runs[0], "loss").size(), logged);
}

TEST_F(TrackedTraining, AServerDownChangesNothingAndEndsWithOneLine) {
  const ProcessResult without = Run(1, {"--max-steps", "5"}, TrackingEnv(""));
  ASSERT_EQ(without.exit_code, 0) << without.output;
  // A port nothing listens on.
  const ProcessResult down = Run(1, {"--max-steps", "5"}, TrackingEnv("http://127.0.0.1:9"));
  ASSERT_EQ(down.exit_code, 0) << down.output;
  const std::regex final_loss(R"(final loss ([0-9.]+))");
  std::smatch a, b;
  ASSERT_TRUE(std::regex_search(without.output, a, final_loss)) << without.output;
  ASSERT_TRUE(std::regex_search(down.output, b, final_loss)) << down.output;
  EXPECT_EQ(a[1], b[1]);
  std::smatch line;
  ASSERT_TRUE(std::regex_search(
      down.output, line, std::regex(R"(\[warning\] \[runtime\] MLflow server .*not delivered.*)")))
      << down.output;
  EXPECT_NE(line.str().find("127.0.0.1:9"), std::string::npos) << line.str();
}

TEST_F(TrackedTraining, AStragglerIsNamedInTheProgressLineTheMetricsAndTheTable) {
  MlflowDouble mlflow;
  Subprocess p(
      {BinPath("cohort"), "launch", "--nproc-per-node", "3", "--", BinPath("ckpt_train_worker"),
       "--steps", "15", "--global-batch", "12", "--slow-rank", "2", "--slow-compute-ms", "40"},
      TrackingEnv(mlflow.uri()));
  const ProcessResult r = p.Wait(120s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(
      r.output,
      std::regex(
          R"(\[rank 0\] epoch 1/1000 step \d+/\d+ .*; straggler: rank 2 on node 0 at [0-9.]+x the median step time)")))
      << r.output;
  EXPECT_TRUE(
      std::regex_search(r.output, std::regex(R"(rank 2 \(node 0\): [0-9.]+ ms  straggler at)")))
      << r.output;
  const std::vector<FakeRun> runs = mlflow.Runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].tags.at("cohort.straggler"), "rank 2 on node 0");
  const auto ratio = Series(runs[0], "straggler_ratio");
  ASSERT_FALSE(ratio.empty());
  EXPECT_GT(ratio.rbegin()->second, 2.0);  // 40 ms against a step of a few ms
}

}  // namespace
}  // namespace cohort::testing
