// A Triton model repository in any object store (file://, s3://, memory://, a plain path):
//   <repo>/<model>/config.pbtxt
//   <repo>/<model>/<version>/model.pt
// Versions are positive integers, as Triton numbers them. Torch-free.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/store/object_store.h"

namespace cohort::serving {

struct WrittenVersion {
  int version = 0;
  std::string model_uri;   // <repo>/<model>/<version>/model.pt
  std::string config_uri;  // <repo>/<model>/config.pbtxt
};

class ModelRepository {
 public:
  // Opens the store at uri (checkpoint::OpenObjectStore's forms).
  explicit ModelRepository(const std::string& uri);
  explicit ModelRepository(std::shared_ptr<checkpoint::ObjectStore> store);

  // The repository's root URI: what a KServe storageUri points at.
  std::string Uri() const;
  // The versions the model has (folders holding a model.pt), ascending; empty when none.
  std::vector<int> Versions(const std::string& model) const;
  // Writes version (0: one past the newest) of the model: model.pt first, then config.pbtxt, so
  // that the config Triton reads never names a version that is not complete. Throws
  // InvalidArgument when that version already exists (versions are never overwritten) or the
  // model name cannot be a folder name.
  WrittenVersion Write(const std::string& model, const std::string& model_pt,
                       const std::string& config_pbtxt, int version = 0);
  // The URI of a key under the root.
  std::string UriOf(const std::string& key) const;

 private:
  std::shared_ptr<checkpoint::ObjectStore> store_;
};

// Throws InvalidArgument unless name works as a Triton model folder and an MLflow model name:
// letters, digits, '_', '-' and '.', not starting with '.'.
void CheckModelName(const std::string& name);

}  // namespace cohort::serving
