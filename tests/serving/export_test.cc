// Export: Fashion-MNIST's trained C++ module copied into its TorchScript skeleton gives the
// module's outputs in libtorch and in Debian's python3-torch; a snapshot's tensors do the same;
// TorchScript is kept as is; a missing name or a shape mismatch is one line naming it.
#include "serving/export.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/store/object_store.h"
#include "common/error.h"
#include "serving/register_model.h"
#include "tests/serving/fashion_fixture.h"
#include "tests/serving/serving_test_util.h"

namespace cohort::serving {
namespace {

using namespace testing;  // NOLINT: the fixture's helpers

TEST(Export, FashionCnnGivesTheTrainedOutputsInLibtorchAndPython) {
  auto model = TrainedFashionCnn();
  const at::Tensor x = TestBatch();
  const at::Tensor expected = Expected(*model, x);
  ExportedModel exported = ExportModule(*examples::AsModule(model), SkeletonPath());
  EXPECT_EQ(exported.input.name, "INPUT__0");
  EXPECT_EQ(exported.input.data_type, "TYPE_FP32");
  EXPECT_EQ(exported.input.dims, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(exported.output.name, "OUTPUT__0");
  EXPECT_EQ(exported.output.data_type, "TYPE_FP32");
  EXPECT_EQ(exported.output.dims, (std::vector<int64_t>{10}));
  EXPECT_LE(MaxDiffOfArchive(exported.model_pt, x, expected), 1e-6);

  const std::string dir = TempDir("export");
  WriteFile(dir + "/model.pt", exported.model_pt);
  EXPECT_LE(MaxDiff(PythonOutputs(dir + "/model.pt", Floats(x), {5, 1, 28, 28}), expected), 1e-6);
  // The outputs are not trivially equal to the untrained skeleton's.
  std::istringstream skeleton_in(ReadFile(SkeletonPath()));
  auto skeleton = torch::jit::load(skeleton_in);
  EXPECT_GT((skeleton.forward({x}).toTensor() - expected).abs().max().item<double>(), 1e-3);
  std::filesystem::remove_all(dir);
}

TEST(Export, SnapshotTensorsExportTheSameModel) {
  auto model = TrainedFashionCnn();
  const at::Tensor x = TestBatch();
  ExportedModel exported = ExportShard(ModelShard(*examples::AsModule(model)), SkeletonPath());
  EXPECT_LE(MaxDiffOfArchive(exported.model_pt, x, Expected(*model, x)), 1e-6);
}

TEST(Export, TorchScriptIsSavedAsIs) {
  ExportedModel file = ExportScriptedFile(SkeletonPath());
  EXPECT_EQ(file.model_pt, ReadFile(SkeletonPath()));
  EXPECT_EQ(file.output.dims, (std::vector<int64_t>{10}));
  std::istringstream in(file.model_pt);
  torch::jit::Module module = torch::jit::load(in);
  module.train();  // left as the caller had it: the probe runs on a copy
  ExportedModel scripted = ExportScripted(module);
  EXPECT_TRUE(module.is_training());
  const at::Tensor x = TestBatch();
  module.eval();
  EXPECT_LE(MaxDiffOfArchive(scripted.model_pt, x, module.forward({x}).toTensor()), 1e-6);
}

// The message of the InvalidArgument that fn throws ("" when none).
template <typename Fn>
std::string ErrorOf(Fn fn) {
  try {
    fn();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(Export, AMissingNameOrShapeMismatchIsOneLineNamingIt) {
  auto model = TrainedFashionCnn();
  checkpoint::Shard renamed = ModelShard(*examples::AsModule(model));
  for (auto& t : renamed.tensors) {
    if (t.name() == "model/fc2.weight")
      t = checkpoint::HostTensor::Copy("model/head.weight", t.dtype(), t.shape(), t.data());
  }
  std::string what = ErrorOf([&] { ExportShard(renamed, SkeletonPath()); });
  EXPECT_EQ(Lines(what), 1) << what;
  EXPECT_NE(what.find("'fc2.weight' [10, 128]"), std::string::npos) << what;

  checkpoint::Shard reshaped = ModelShard(*examples::AsModule(model));
  std::vector<float> zeros(5 * 128);
  for (auto& t : reshaped.tensors) {
    if (t.name() == "model/fc2.weight")
      t = checkpoint::HostTensor::Copy(t.name(), t.dtype(), {5, 128}, zeros.data());
  }
  what = ErrorOf([&] { ExportShard(reshaped, SkeletonPath()); });
  EXPECT_EQ(Lines(what), 1) << what;
  EXPECT_NE(what.find("'fc2.weight' is [5, 128] in the snapshot but [10, 128]"), std::string::npos)
      << what;

  checkpoint::Shard extra = ModelShard(*examples::AsModule(model));
  extra.tensors.push_back(checkpoint::HostTensor::Copy(
      "model/extra.bias", collectives::DType::kFloat32, {5}, zeros.data()));
  what = ErrorOf([&] { ExportShard(extra, SkeletonPath()); });
  EXPECT_EQ(Lines(what), 1) << what;
  EXPECT_NE(what.find("'extra.bias'"), std::string::npos) << what;

  torch::nn::Linear other(3, 4);
  what = ErrorOf([&] { ExportModule(*other, SkeletonPath()); });
  EXPECT_EQ(Lines(what), 1) << what;
  EXPECT_NE(what.find("has no tensor of that name"), std::string::npos) << what;
}

TEST(Export, AWrongExampleShapeIsOneLine) {
  ExportOptions options;
  options.example_input_shape = {28, 28};
  const std::string what = ErrorOf([&] { ExportScriptedFile(SkeletonPath(), options); });
  EXPECT_EQ(Lines(what), 1) << what;
  EXPECT_NE(what.find("--example-input-shape"), std::string::npos) << what;
}

TEST(Export, RegisterTrainedModelWritesTheRepositoryATrainingProgramAsksFor) {
  auto model = TrainedFashionCnn();
  RegisterOptions options;
  options.name = "fmnist";
  options.repo_uri = "memory://serving-register-trained";
  options.skeleton_path = SkeletonPath();
  options.use_mlflow = false;
  options.config.max_batch_size = 8;
  PublishResult result = RegisterTrainedModel(*examples::AsModule(model), options);
  EXPECT_EQ(result.written.model_uri, "memory://serving-register-trained/fmnist/1/model.pt");
  EXPECT_FALSE(result.registered);
  auto store = checkpoint::OpenObjectStore(options.repo_uri);
  const at::Tensor x = TestBatch();
  EXPECT_LE(MaxDiffOfArchive(store->Get("fmnist/1/model.pt").value(), x, Expected(*model, x)),
            1e-6);
  const std::string config = store->Get("fmnist/config.pbtxt").value();
  EXPECT_NE(config.find("max_batch_size: 8\n"), std::string::npos) << config;
  EXPECT_NE(config.find("dims: [ 10 ]"), std::string::npos) << config;
  options.skeleton_path.clear();
  EXPECT_THROW(RegisterTrainedModel(*examples::AsModule(model), options), InvalidArgument);
}

}  // namespace
}  // namespace cohort::serving
