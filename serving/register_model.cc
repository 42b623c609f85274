#include "serving/register_model.h"

#include "common/error.h"

namespace cohort::serving {

PublishResult RegisterExported(ExportedModel exported, const RegisterOptions& o) {
  PublishRequest r;
  r.name = o.name;
  r.repo_uri = o.repo_uri;
  r.model_pt = std::move(exported.model_pt);
  r.config = o.config;
  SetSampleIo(r.config, std::move(exported.input), std::move(exported.output));
  if (o.use_mlflow) r.mlflow = tracking::MlflowConfig::FromEnv();
  r.run_id = o.run_id;
  r.tags = o.tags;
  r.alias = o.alias;
  return Publish(r);
}

PublishResult RegisterTrainedModel(const torch::nn::Module& module, const RegisterOptions& o) {
  if (o.skeleton_path.empty())
    throw InvalidArgument(
        "registering a C++ module needs the TorchScript skeleton of its architecture "
        "(RegisterOptions::skeleton_path; Fashion-MNIST's is built as skeletons/fashion_cnn.pt)");
  CheckModelName(o.name);  // before the export's cost
  return RegisterExported(ExportModule(module, o.skeleton_path, o.export_options), o);
}

PublishResult RegisterTrainedModel(const torch::jit::Module& module, const RegisterOptions& o) {
  CheckModelName(o.name);
  return RegisterExported(ExportScripted(module, o.export_options), o);
}

}  // namespace cohort::serving
