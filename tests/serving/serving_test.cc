// serving/ without libtorch: config.pbtxt, the repository layout, the InferenceService (checked
// against KServe's CRD schema), and Publish against the MLflow double.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "checkpoint/store/object_store.h"
#include "common/error.h"
#include "serving/inference_service.h"
#include "serving/model_repository.h"
#include "serving/publish.h"
#include "serving/triton_config.h"
#include "tests/serving/serving_test_util.h"
#include "tests/tracking/mlflow_double.h"

namespace cohort::serving {
namespace {

using testing::Lines;
using testing::ValidateInferenceService;

TritonConfig FashionConfig() {
  TritonConfig c;
  c.name = "fmnist";
  c.max_batch_size = 32;
  c.instance_kind = InstanceKind::kCpu;
  c.instance_count = 2;
  c.dynamic_batching = DynamicBatching{{4, 8}, 500};
  SetSampleIo(c, {"INPUT__0", "TYPE_FP32", {1, 28, 28}}, {"OUTPUT__0", "TYPE_FP32", {10}});
  return c;
}

TEST(TritonConfig, RendersModelConfigFieldsOnly) {
  EXPECT_EQ(RenderConfigPbtxt(FashionConfig()),
            "name: \"fmnist\"\n"
            "platform: \"pytorch_libtorch\"\n"
            "max_batch_size: 32\n"
            "input [\n  {\n    name: \"INPUT__0\"\n    data_type: TYPE_FP32\n"
            "    dims: [ 1, 28, 28 ]\n  }\n]\n"
            "output [\n  {\n    name: \"OUTPUT__0\"\n    data_type: TYPE_FP32\n"
            "    dims: [ 10 ]\n  }\n]\n"
            "instance_group [\n  {\n    count: 2\n    kind: KIND_CPU\n  }\n]\n"
            "dynamic_batching {\n  preferred_batch_size: 4\n  preferred_batch_size: 8\n"
            "  max_queue_delay_microseconds: 500\n}\n");
}

TEST(TritonConfig, WithoutBatchingDimsGetAVariableLeadingDimension) {
  TritonConfig c;
  c.name = "m";
  c.max_batch_size = 0;
  c.instance_kind = InstanceKind::kGpu;
  SetSampleIo(c, {"INPUT__0", "TYPE_INT64", {16}}, {"OUTPUT__0", "TYPE_FP16", {16, 50}});
  const std::string text = RenderConfigPbtxt(c);
  EXPECT_NE(text.find("max_batch_size: 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("data_type: TYPE_INT64\n    dims: [ -1, 16 ]"), std::string::npos) << text;
  EXPECT_NE(text.find("data_type: TYPE_FP16\n    dims: [ -1, 16, 50 ]"), std::string::npos);
  EXPECT_NE(text.find("kind: KIND_GPU"), std::string::npos);
  EXPECT_EQ(text.find("dynamic_batching"), std::string::npos);
}

TEST(TritonConfig, RefusesWhatTritonWouldInOneLine) {
  TritonConfig c = FashionConfig();
  c.inputs[0].data_type = "FP32";
  try {
    RenderConfigPbtxt(c);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(Lines(e.what()), 1);
    EXPECT_NE(std::string(e.what()).find("'FP32'"), std::string::npos) << e.what();
  }
  c = FashionConfig();
  c.max_batch_size = 0;  // dynamic batching needs batching
  EXPECT_THROW(RenderConfigPbtxt(c), InvalidArgument);
  c = FashionConfig();
  c.outputs[0].dims = {-2};
  EXPECT_THROW(RenderConfigPbtxt(c), InvalidArgument);
  EXPECT_THROW(ParseInstanceKind("tpu"), InvalidArgument);
  EXPECT_EQ(ParseInstanceKind("GPU"), InstanceKind::kGpu);
}

TEST(ModelRepository, VersionsCountUpAndAreNeverOverwritten) {
  auto store = std::shared_ptr<checkpoint::ObjectStore>(
      checkpoint::OpenObjectStore("memory://serving-repo-versions"));
  ModelRepository repo(store);
  EXPECT_TRUE(repo.Versions("fmnist").empty());
  WrittenVersion v1 = repo.Write("fmnist", "pt-1", "cfg-1");
  WrittenVersion v2 = repo.Write("fmnist", "pt-2", "cfg-2");
  EXPECT_EQ(v1.version, 1);
  EXPECT_EQ(v2.version, 2);
  EXPECT_EQ(v2.model_uri, "memory://serving-repo-versions/fmnist/2/model.pt");
  EXPECT_EQ(v2.config_uri, "memory://serving-repo-versions/fmnist/config.pbtxt");
  EXPECT_EQ(store->Get("fmnist/1/model.pt").value(), "pt-1");
  EXPECT_EQ(store->Get("fmnist/2/model.pt").value(), "pt-2");
  EXPECT_EQ(store->Get("fmnist/config.pbtxt").value(), "cfg-2");
  store->Put("fmnist/notes/model.pt", "not a version");
  store->Put("other/7/model.pt", "another model");
  EXPECT_EQ(repo.Versions("fmnist"), (std::vector<int>{1, 2}));
  EXPECT_THROW(repo.Write("fmnist", "again", "cfg", 2), InvalidArgument);
  EXPECT_EQ(store->Get("fmnist/2/model.pt").value(), "pt-2");
  EXPECT_EQ(repo.Write("fmnist", "pt-5", "cfg-5", 5).version, 5);
  EXPECT_EQ(repo.Write("fmnist", "pt-6", "cfg-6").version, 6);
  EXPECT_THROW(repo.Write("../up", "x", "y"), InvalidArgument);
}

InferenceServiceSpec Spec() {
  InferenceServiceSpec s;
  s.name = "fmnist";
  s.namespace_ = "models";
  s.storage_uri = "s3://bucket/repo";
  s.model = "fmnist";
  s.version = 3;
  return s;
}

TEST(InferenceService, MatchesKServesSchemaWithAndWithoutCanary) {
  InferenceServiceSpec s = Spec();
  const std::string plain = RenderInferenceService(s);
  EXPECT_EQ(ValidateInferenceService(plain), "") << plain;
  YAML::Node doc = YAML::Load(plain);
  EXPECT_EQ(doc["apiVersion"].as<std::string>(), "serving.kserve.io/v1beta1");
  EXPECT_EQ(doc["kind"].as<std::string>(), "InferenceService");
  EXPECT_EQ(doc["metadata"]["namespace"].as<std::string>(), "models");
  YAML::Node predictor = doc["spec"]["predictor"];
  EXPECT_EQ(predictor["model"]["modelFormat"]["name"].as<std::string>(), "pytorch");
  EXPECT_EQ(predictor["model"]["runtime"].as<std::string>(), "kserve-tritonserver");
  EXPECT_EQ(predictor["model"]["storageUri"].as<std::string>(), "s3://bucket/repo");
  EXPECT_EQ(predictor["annotations"][kVersionAnnotation].as<std::string>(), "fmnist/3");
  EXPECT_FALSE(predictor["canaryTrafficPercent"]);
  EXPECT_FALSE(predictor["model"]["resources"]);

  s.canary_percent = 20;
  s.gpu = true;
  const std::string canary = RenderInferenceService(s);
  EXPECT_EQ(ValidateInferenceService(canary), "") << canary;
  predictor = YAML::Load(canary)["spec"]["predictor"];
  EXPECT_EQ(predictor["canaryTrafficPercent"].as<int>(), 20);
  EXPECT_EQ(predictor["model"]["resources"]["limits"]["nvidia.com/gpu"].as<std::string>(), "1");
}

TEST(InferenceService, TheValidatorRejectsAMisspeltField) {
  // The check above is only worth something if the validator is strict.
  std::string text = RenderInferenceService(Spec());
  text.replace(text.find("storageUri"), 10, "storageURI");
  EXPECT_NE(ValidateInferenceService(text).find("storageURI"), std::string::npos);
}

TEST(InferenceService, RefusesNamesKServeRefuses) {
  InferenceServiceSpec s = Spec();
  s.name = "Fashion_MNIST";
  try {
    RenderInferenceService(s);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(Lines(e.what()), 1);
    EXPECT_NE(std::string(e.what()).find("--service-name"), std::string::npos) << e.what();
  }
  s = Spec();
  s.canary_percent = 101;
  EXPECT_THROW(RenderInferenceService(s), InvalidArgument);
}

PublishRequest Request(const std::string& repo, const std::string& tracking_uri) {
  PublishRequest r;
  r.name = "fmnist";
  r.repo_uri = repo;
  r.model_pt = "torchscript bytes";
  r.config = FashionConfig();
  r.mlflow = tracking::MlflowConfig();
  r.mlflow->tracking_uri = tracking_uri;
  r.mlflow->max_attempts = 2;
  r.tags = {{"test_accuracy", "0.91"}};
  return r;
}

TEST(Publish, RegistersEachVersionWithSourceRunIdTagsAndAlias) {
  tracking::testing::MlflowDouble mlflow;
  tracking::MlflowClient client(Request("", mlflow.uri()).mlflow.value());
  const std::string run = client.CreateRun(client.GetOrCreateExperiment("Default"), 1, {});
  PublishRequest r = Request("memory://serving-publish", mlflow.uri());
  r.run_id = run;
  PublishResult first = Publish(r);
  PublishResult second = Publish(r);
  EXPECT_EQ(first.written.model_uri, "memory://serving-publish/fmnist/1/model.pt");
  ASSERT_TRUE(second.registered);
  EXPECT_EQ(second.registered->version, "2");
  EXPECT_EQ(mlflow.Handled("registered-models/create"), 1);
  auto model = mlflow.Model("fmnist");
  ASSERT_TRUE(model);
  ASSERT_EQ(model->versions.size(), 2u);
  EXPECT_EQ(model->versions[0].source, "memory://serving-publish/fmnist/1/model.pt");
  EXPECT_EQ(model->versions[1].source, "memory://serving-publish/fmnist/2/model.pt");
  EXPECT_EQ(model->versions[0].run_id, run);
  EXPECT_EQ(model->versions[1].tags.at("test_accuracy"), "0.91");
  EXPECT_EQ(model->versions[1].tags.at("cohort.repository_version"), "2");
  EXPECT_EQ(model->aliases.at("candidate"), "2");
  EXPECT_NE(second.Summary().find("registered fmnist version 2 in MLflow as @candidate"),
            std::string::npos)
      << second.Summary();
}

TEST(Publish, ARefusedCredentialIsOneLineAndWritesNothing) {
  tracking::testing::MlflowDouble mlflow;
  mlflow.RequireBearer("the-right-token");
  PublishRequest r = Request("memory://serving-refused", mlflow.uri());
  r.mlflow->token = "a-wrong-token";
  try {
    Publish(r);
    FAIL() << "no error";
  } catch (const Unauthenticated& e) {
    EXPECT_EQ(Lines(e.what()), 1) << e.what();
    EXPECT_NE(std::string(e.what()).find("401"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(mlflow.uri()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(checkpoint::OpenObjectStore("memory://serving-refused")->List("").empty());
  EXPECT_FALSE(mlflow.Model("fmnist"));
}

TEST(Publish, RefusesAliasesMlflowRefuses) {
  EXPECT_THROW(CheckAlias("latest"), InvalidArgument);
  EXPECT_THROW(CheckAlias("v3"), InvalidArgument);
  EXPECT_THROW(CheckAlias("has space"), InvalidArgument);
  EXPECT_NO_THROW(CheckAlias("champion"));
  EXPECT_NO_THROW(CheckAlias("v3-candidate"));
}

}  // namespace
}  // namespace cohort::serving
