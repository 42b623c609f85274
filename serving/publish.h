// Publishing an exported model: a new version in a Triton model repository and, when MLflow is
// configured, a registered model version whose source is that model.pt, with an alias. What
// `cohort model register` and the Trainer's --register do after export. Torch-free.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "serving/model_repository.h"
#include "serving/triton_config.h"
#include "tracking/mlflow_client.h"

namespace cohort::serving {

struct PublishRequest {
  std::string name;      // the Triton folder and the MLflow registered model
  std::string repo_uri;  // the repository root
  std::string model_pt;  // the TorchScript archive's bytes
  // config.pbtxt's fields; its name is set to `name`.
  TritonConfig config;
  // The registry; nullopt: repository only.
  std::optional<tracking::MlflowConfig> mlflow;
  std::string run_id;                    // the training run; "" uses mlflow->run_id
  std::vector<tracking::KeyValue> tags;  // on the model version (e.g. test_accuracy)
  std::string alias = "candidate";       // "" sets none
};

struct PublishResult {
  WrittenVersion written;
  std::optional<tracking::ModelVersion> registered;  // when MLflow was configured
  std::string alias;                                 // the alias set, "" when none

  // One line for the user: what was written where, and what was registered.
  std::string Summary() const;
};

// Checks the registry first (registered-models/get or create), so that a refused credential or
// a wrong server stops before anything is written; then writes the repository, then
// model-versions/create with source = the model.pt URI, then the alias. Throws what the store
// or the MLflow client throws; a registry failure after the write names the version written.
PublishResult Publish(const PublishRequest& request);

// MLflow's alias rule (registered-models/alias): letters, digits, '_' and '-', not "latest"
// and not "v<digits>" (those name versions). Throws InvalidArgument saying so.
void CheckAlias(const std::string& alias);

}  // namespace cohort::serving
