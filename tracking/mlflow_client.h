// A synchronous client of MLflow's REST API 2.0 (tracking and model registry), on the shared
// HTTP layer (common/http.h): each call retries 5xx, 429, timeouts and connection errors, and a
// failure is one line naming the server, the call and MLflow's error_code. Torch-free.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/http.h"
#include "tracking/mlflow_batch.h"

namespace cohort::tracking {

// MLflow's RunStatus enum, as its JSON spells it.
enum class RunStatus { kRunning, kScheduled, kFinished, kFailed, kKilled };
const char* RunStatusName(RunStatus status);

struct MlflowConfig {
  std::string tracking_uri;                 // http(s)://host:port[/prefix]
  std::string experiment_name = "Default";  // MLflow's default experiment
  std::string run_id;                       // continue this run instead of creating one
  std::string token;                        // bearer, over user/password
  std::string username, password;           // basic auth

  int max_attempts = 5;  // per call (the logger retries further between calls)
  double backoff_initial_s = 0.2;
  double backoff_max_s = 5;
  double connect_timeout_s = 5;
  double request_timeout_s = 30;

  // From MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLFLOW_RUN_ID, MLFLOW_TRACKING_TOKEN,
  // MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; nullopt when no URI is set. Throws
  // InvalidArgument for a URI that is not http(s) (file stores and "databricks" need MLflow's
  // own client).
  static std::optional<MlflowConfig> FromEnv();
};

// What MLflow answered with an error JSON {"error_code", "message"} (or a bare HTTP status).
struct MlflowError {
  long status = 0;
  std::string error_code;  // "RESOURCE_DOES_NOT_EXIST", ...; "" when the body had none
  std::string message;
};

struct ModelVersion {
  std::string name;
  std::string version;  // MLflow numbers versions as strings: "1", "2", ...
  std::string source;
  std::string run_id;
};

class MlflowClient {
 public:
  // `cancelled` (optional) makes a call in its retries give up at once (the run logger's close).
  explicit MlflowClient(MlflowConfig config, std::function<bool()> cancelled = {});

  // experiments/get-by-name, and experiments/create when absent. Returns the experiment_id.
  std::string GetOrCreateExperiment(const std::string& name);
  // runs/create in the experiment; returns the run_id.
  std::string CreateRun(const std::string& experiment_id, int64_t start_time_ms,
                        const std::vector<KeyValue>& tags);
  // runs/get: the run's status ("RUNNING", ...); throws InvalidArgument when it does not exist.
  std::string GetRunStatus(const std::string& run_id);
  // runs/update: status, and end_time when end_time_ms >= 0.
  void UpdateRun(const std::string& run_id, RunStatus status, int64_t end_time_ms);
  // runs/log-batch, split into as many requests as MLflow's limits need (mlflow_batch.h).
  // Throws after a failed piece; the pieces before it were delivered.
  void LogBatch(const std::string& run_id, Batch batch);
  // runs/set-tag.
  void SetTag(const std::string& run_id, const std::string& key, const std::string& value);

  // registered-models/create unless registered-models/get finds it. True when it was created.
  bool EnsureRegisteredModel(const std::string& name);
  // model-versions/create with the source URI, the run id and tags.
  ModelVersion CreateModelVersion(const std::string& name, const std::string& source,
                                  const std::string& run_id, const std::vector<KeyValue>& tags);
  // registered-models/alias (POST): points the alias at the version, moving it if it exists.
  void SetAlias(const std::string& name, const std::string& alias, const std::string& version);

  // "MLflow server <uri>", for messages.
  std::string ServerName() const { return http_->Name(); }
  uint64_t retries() const { return http_->retries(); }

 private:
  // One call: returns the answer's JSON on 2xx, the MlflowError otherwise (refusals and
  // exhausted retries throw from the HTTP layer).
  nlohmann::json Call(const std::string& method, const std::string& path,
                      const nlohmann::json& body, MlflowError* error);
  // Call() that throws the one-line error for any MlflowError.
  nlohmann::json CallOrThrow(const std::string& method, const std::string& path,
                             const nlohmann::json& body);
  [[noreturn]] void Throw(const std::string& method, const std::string& path,
                          const MlflowError& error) const;

  MlflowConfig config_;
  std::string prefix_;  // the URI's path, before /api/2.0/mlflow
  std::unique_ptr<http::Client> http_;
};

}  // namespace cohort::tracking
