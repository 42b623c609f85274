// The one call a training program makes to register its trained model at the end of training
// (the Trainer's --register NAME --model-repo URI): export to TorchScript, write a new version
// into the Triton repository, and register it in MLflow when MLFLOW_TRACKING_URI is set (the run
// id from MLFLOW_RUN_ID unless given). Call it on rank 0 only. Header free of libtorch.
#pragma once

#include <string>
#include <vector>

#include "runtime/torch_fwd.h"
#include "serving/export.h"
#include "serving/publish.h"

namespace cohort::serving {

struct RegisterOptions {
  std::string name;      // --register
  std::string repo_uri;  // --model-repo
  // For a C++ nn::Module: its TorchScript skeleton (export.h). Unused for a jit::Module.
  std::string skeleton_path;
  ExportOptions export_options;
  TritonConfig config;  // max_batch_size, instance group, dynamic batching; name and I/O are set
  std::string run_id;   // the MLflow run; "" uses MLFLOW_RUN_ID
  std::vector<tracking::KeyValue> tags;  // e.g. {"test_accuracy", "0.91"}
  std::string alias = "candidate";
  bool use_mlflow = true;  // false: repository only, even when MLFLOW_TRACKING_URI is set
};

// Throws InvalidArgument (export or naming problems), and what the store or MLflow throws.
PublishResult RegisterTrainedModel(const torch::nn::Module& module, const RegisterOptions& options);
PublishResult RegisterTrainedModel(const torch::jit::Module& module,
                                   const RegisterOptions& options);
// Publishes an export already made (what cohort-export does after ExportShard).
PublishResult RegisterExported(ExportedModel exported, const RegisterOptions& options);

}  // namespace cohort::serving
