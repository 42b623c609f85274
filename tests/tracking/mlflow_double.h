// An MLflow tracking server double over HTTP (cpp-httplib) for tests: the REST API 2.0 paths,
// methods and JSON field names and types of MLflow 2.x, its error JSON
// {"error_code": ..., "message": ...} with MLflow's HTTP statuses and messages, and state for
// experiments, runs (params, tags, every metric value), registered models, versions and
// aliases. Faults on demand: HTTP 500/429 (with Retry-After), 401 without the right
// credentials, slowness. One deliberate difference: MLflow ignores unknown JSON fields, the
// double rejects them (INVALID_PARAMETER_VALUE), so a misspelt field fails a test instead of
// silently dropping data. Python's mlflow package is not needed.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace cohort::tracking::testing {

struct FakeMetric {
  std::string key;
  double value = 0;
  int64_t timestamp = 0;
  int64_t step = 0;
};

struct FakeRun {
  std::string run_id, experiment_id, status = "RUNNING";
  int64_t start_time = 0, end_time = 0;
  std::map<std::string, std::string> params, tags;
  std::vector<FakeMetric> metrics;  // every value logged, in arrival order
};

struct FakeVersion {
  std::string version, source, run_id;
  std::map<std::string, std::string> tags;
};

struct FakeModel {
  std::string name;
  std::vector<FakeVersion> versions;
  std::map<std::string, std::string> aliases;  // alias -> version
};

// Validates a JSON request against one MLflow request message; "" when it conforms, else the
// message of MLflow's INVALID_PARAMETER_VALUE. Exposed for the double's own unit test.
std::string ValidateRequest(const std::string& endpoint, const nlohmann::json& body);

class MlflowDouble {
 public:
  MlflowDouble();  // listens on 127.0.0.1, a free port
  ~MlflowDouble();
  MlflowDouble(const MlflowDouble&) = delete;
  MlflowDouble& operator=(const MlflowDouble&) = delete;

  std::string uri() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // The next n requests whose path ends with `path_suffix` ("" = any) get `status` before any
  // change is made; Retry-After is sent when retry_after_s >= 0.
  void FailNext(int n, int status, const std::string& path_suffix = "", int retry_after_s = -1);
  // Each request fails with 500 or 429 (half each) with this probability, seeded.
  void FailRandomly(double rate, uint64_t seed);
  // Every request waits this long before it is answered.
  void SetDelay(double seconds) { delay_s_ = seconds; }
  // Requests without "Authorization: Bearer <token>" (or basic user:password) get 401.
  void RequireBearer(const std::string& token);
  void RequireBasic(const std::string& user, const std::string& password);

  // State, copied out.
  std::optional<std::string> ExperimentId(const std::string& name) const;
  std::vector<FakeRun> Runs() const;
  std::optional<FakeRun> Run(const std::string& run_id) const;
  std::optional<FakeModel> Model(const std::string& name) const;
  // Requests that reached a path (after auth and injected faults), e.g. "runs/log-batch".
  int Handled(const std::string& endpoint) const;
  int Faults() const { return faults_; }
  // The bodies of every handled runs/log-batch request.
  std::vector<nlohmann::json> LogBatchBodies() const;

 private:
  struct Fault {
    int remaining;
    int status;
    std::string suffix;
    int retry_after_s;
  };
  void Serve(const std::string& method, const std::string& endpoint, const httplib::Request& req,
             httplib::Response& res);
  bool Authorized(const httplib::Request& req) const;
  bool InjectFault(const std::string& endpoint, httplib::Response& res);
  // Applies one validated request to the state; returns the answer or throws ApiError.
  nlohmann::json Handle(const std::string& method, const std::string& endpoint,
                        const nlohmann::json& body);
  nlohmann::json HandleRun(const std::string& endpoint, const nlohmann::json& body);
  nlohmann::json HandleLogBatch(const nlohmann::json& body);
  nlohmann::json HandleRegistry(const std::string& method, const std::string& endpoint,
                                const nlohmann::json& body);
  FakeRun& RunOrThrow(const nlohmann::json& body);
  FakeModel& ModelOrThrow(const std::string& name);
  nlohmann::json RunInfo(const FakeRun& run) const;

  mutable std::mutex mu_;
  std::map<std::string, std::string> experiments_;  // name -> id
  std::map<std::string, FakeRun> runs_;
  std::map<std::string, FakeModel> models_;
  std::map<std::string, int> handled_;
  std::vector<nlohmann::json> log_batches_;
  std::vector<Fault> faults_next_;
  double fault_rate_ = 0;
  std::mt19937_64 rng_;
  std::string auth_;  // the Authorization header required, "" = none
  std::atomic<double> delay_s_{0};
  std::atomic<int> faults_{0};
  uint64_t next_id_ = 1;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace cohort::tracking::testing
