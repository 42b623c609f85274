// `cohort model register|promote|manifest` as a user runs them: a trained Fashion-MNIST
// snapshot registered into a repository on S3 (moto, signatures on; awscli reads it back) and
// into the MLflow double; the model.pt that landed gives the trained outputs in libtorch and in
// Debian's python3-torch; promote moves an alias; the manifest is a valid InferenceService.
// Errors (a name or shape the skeleton lacks, a refused MLflow credential) are one line.
// One add_test (the moto server is shared by the whole binary).
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>

#include "checkpoint/checkpointer.h"
#include "tests/checkpoint/moto_fixture.h"
#include "tests/serving/fashion_fixture.h"
#include "tests/serving/serving_test_util.h"
#include "tests/tracking/mlflow_double.h"
#include "tests/util/subprocess.h"
#include "tracking/mlflow_client.h"

namespace cohort::serving {
namespace {

using namespace testing;  // NOLINT: the fixture's helpers
using cohort::testing::BinPath;
using cohort::testing::ProcessResult;
using cohort::testing::Subprocess;
using Env = std::map<std::string, std::string>;

ProcessResult Cohort(std::vector<std::string> args, Env env) {
  args.insert(args.begin(), BinPath("cohort"));
  for (const char* name : {"MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_TOKEN"})
    env.emplace(name, "");  // empty = unset, unless the test set it
  Subprocess p(args, env);
  return p.Wait(std::chrono::seconds(120));
}

// A snapshot of shard in a fresh file:// folder; returns its URI.
std::string SaveSnapshot(const checkpoint::Shard& shard, const std::string& name) {
  const std::string dir = TempDir(name);
  checkpoint::Checkpointer ckpt(checkpoint::OpenObjectStore("file://" + dir), {});
  return ckpt.Save(shard).uri;
}

std::string CreateRun(const std::string& tracking_uri) {
  tracking::MlflowConfig c;
  c.tracking_uri = tracking_uri;
  tracking::MlflowClient client(c);
  return client.CreateRun(client.GetOrCreateExperiment("fmnist"), 1, {});
}

const char* kConfig =
    "name: \"fmnist\"\nplatform: \"pytorch_libtorch\"\nmax_batch_size: 16\n"
    "input [\n  {\n    name: \"INPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ 1, 28, 28 ]\n"
    "  }\n]\n"
    "output [\n  {\n    name: \"OUTPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ 10 ]\n  }\n]\n"
    "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
    "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n";

TEST(ModelCommand, RegistersASnapshotOnS3AndInMlflowPromotesAndRendersTheManifest) {
  COHORT_REQUIRE_MOTO(moto);
  auto model = TrainedFashionCnn();
  const std::string snapshot = SaveSnapshot(ModelShard(*examples::AsModule(model)), "snap");
  tracking::testing::MlflowDouble mlflow;
  const std::string run = CreateRun(mlflow.uri());
  const std::string repo = moto->FreshUri("models");
  const std::string prefix = repo.substr(("s3://" + moto->bucket() + "/").size());
  Env env = moto->Env();
  env["MLFLOW_TRACKING_URI"] = mlflow.uri();
  env["MLFLOW_RUN_ID"] = run;
  const std::vector<std::string> reg = {"model",
                                        "register",
                                        "--snapshot",
                                        snapshot,
                                        "--name",
                                        "fmnist",
                                        "--repo",
                                        repo,
                                        "--example-input-shape",
                                        "1,28,28",
                                        "--max-batch-size",
                                        "16",
                                        "--instance-kind",
                                        "cpu",
                                        "--max-queue-delay-us",
                                        "100",
                                        "--tag",
                                        "test_accuracy=0.875"};
  ProcessResult r = Cohort(reg, env);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("registered fmnist version 1 in MLflow as @candidate"), std::string::npos)
      << r.output;

  std::vector<std::string> keys;
  for (const auto& o : moto->AwsList(prefix)) keys.push_back(o.key);
  EXPECT_EQ(keys, (std::vector<std::string>{prefix + "/fmnist/1/model.pt",
                                            prefix + "/fmnist/config.pbtxt"}));
  EXPECT_EQ(moto->AwsGet(prefix + "/fmnist/config.pbtxt").value_or(""), kConfig);
  const std::string model_pt = moto->AwsGet(prefix + "/fmnist/1/model.pt").value_or("");
  const at::Tensor x = TestBatch();
  const at::Tensor expected = Expected(*model, x);
  EXPECT_LE(MaxDiffOfArchive(model_pt, x, expected), 1e-6);
  const std::string dir = TempDir("landed");
  WriteFile(dir + "/model.pt", model_pt);
  EXPECT_LE(MaxDiff(PythonOutputs(dir + "/model.pt", Floats(x), {5, 1, 28, 28}), expected), 1e-6);

  auto registered = mlflow.Model("fmnist");
  ASSERT_TRUE(registered);
  ASSERT_EQ(registered->versions.size(), 1u);
  EXPECT_EQ(registered->versions[0].source, repo + "/fmnist/1/model.pt");
  EXPECT_EQ(registered->versions[0].run_id, run);
  EXPECT_EQ(registered->versions[0].tags.at("test_accuracy"), "0.875");
  EXPECT_EQ(registered->aliases.at("candidate"), "1");

  r = Cohort(reg, env);  // a second version: the alias follows it
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(moto->AwsList(prefix).size(), 3u);
  EXPECT_EQ(mlflow.Model("fmnist")->versions.at(1).source, repo + "/fmnist/2/model.pt");
  EXPECT_EQ(mlflow.Model("fmnist")->aliases.at("candidate"), "2");
  EXPECT_EQ(mlflow.Handled("registered-models/create"), 1);

  ASSERT_EQ(Cohort({"model", "promote", "fmnist", "1", "--alias", "champion"}, env).exit_code, 0);
  EXPECT_EQ(mlflow.Model("fmnist")->aliases.at("champion"), "1");
  r = Cohort({"model", "promote", "fmnist", "2", "--alias", "champion"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "fmnist@champion -> version 2\n");
  EXPECT_EQ(mlflow.Model("fmnist")->aliases.at("champion"), "2");
  EXPECT_EQ(mlflow.Model("fmnist")->aliases.at("candidate"), "2");

  r = Cohort({"model", "manifest", "fmnist", "--repo", repo, "--canary-percent", "25"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ValidateInferenceService(r.output), "") << r.output;
  YAML::Node predictor = YAML::Load(r.output)["spec"]["predictor"];
  EXPECT_EQ(predictor["model"]["storageUri"].as<std::string>(), repo);
  EXPECT_EQ(predictor["canaryTrafficPercent"].as<int>(), 25);
  EXPECT_EQ(predictor["annotations"]["serving.cohort.dev/model-version"].as<std::string>(),
            "fmnist/2");
  EXPECT_FALSE(predictor["model"]["resources"]);  // KIND_CPU: no GPU asked for
  std::filesystem::remove_all(dir);
}

TEST(ModelCommand, ANameOrShapeTheSkeletonLacksIsOneLineAndWritesNothing) {
  auto model = TrainedFashionCnn();
  checkpoint::Shard renamed = ModelShard(*examples::AsModule(model));
  checkpoint::Shard reshaped = renamed;
  std::vector<float> zeros(5 * 128);
  for (auto& t : renamed.tensors) {
    if (t.name() == "model/conv2.bias")
      t = checkpoint::HostTensor::Copy("model/conv2.b", t.dtype(), t.shape(), t.data());
  }
  for (auto& t : reshaped.tensors) {
    if (t.name() == "model/fc2.weight")
      t = checkpoint::HostTensor::Copy(t.name(), t.dtype(), {5, 128}, zeros.data());
  }
  const std::string repo = TempDir("repo");
  const std::vector<std::pair<checkpoint::Shard, std::string>> cases = {
      {renamed, "skeleton " + SkeletonPath() +
                    " has 'conv2.bias' [32] but the snapshot has no tensor of that name"},
      {reshaped, "'fc2.weight' is [5, 128] in the snapshot but [10, 128] in skeleton"}};
  for (const auto& [shard, expected] : cases) {
    ProcessResult r = Cohort({"model", "register", "--snapshot", SaveSnapshot(shard, "bad"),
                              "--name", "fmnist", "--repo", "file://" + repo},
                             {});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(Lines(r.output), 1) << r.output;
    EXPECT_EQ(r.output.rfind("cohort model register: error (invalid argument): export: ", 0), 0u)
        << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
  }
  EXPECT_TRUE(std::filesystem::is_empty(repo));
}

TEST(ModelCommand, ARefusedMlflowCredentialIsOneLineAndWritesNothing) {
  auto model = TrainedFashionCnn();
  const std::string snapshot = SaveSnapshot(ModelShard(*examples::AsModule(model)), "snap");
  tracking::testing::MlflowDouble mlflow;
  mlflow.RequireBearer("the-right-token");
  const std::string repo = TempDir("repo");
  ProcessResult r =
      Cohort({"model", "register", "--snapshot", snapshot, "--name", "fmnist", "--repo", repo},
             {{"MLFLOW_TRACKING_URI", mlflow.uri()}, {"MLFLOW_TRACKING_TOKEN", "a-wrong-token"}});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("error (unauthenticated)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("401"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MLFLOW_TRACKING_TOKEN"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::is_empty(repo));

  r = Cohort({"model", "promote", "fmnist", "1", "--alias", "champion"},
             {{"MLFLOW_TRACKING_URI", mlflow.uri()}, {"MLFLOW_TRACKING_TOKEN", "a-wrong-token"}});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("401"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cohort::serving
