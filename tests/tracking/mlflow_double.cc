#include "tests/tracking/mlflow_double.h"

#include <fmt/format.h>
#include <httplib.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "tracking/mlflow_batch.h"

namespace cohort::tracking::testing {
namespace {

using nlohmann::json;

const char* kApi = "/api/2.0/mlflow/";

// An MLflow error: HTTP status, error_code and message (MlflowException's JSON).
struct ApiError : std::runtime_error {
  ApiError(int status, std::string code, const std::string& message)
      : std::runtime_error(message), status(status), code(std::move(code)) {}
  int status;
  std::string code;
};

ApiError Invalid(const std::string& message) {
  return ApiError(400, "INVALID_PARAMETER_VALUE", message);
}
ApiError Missing(const std::string& message) {
  return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message);
}

void SendError(httplib::Response& res, int status, const std::string& code,
               const std::string& message) {
  res.status = status;
  res.set_content(json{{"error_code", code}, {"message", message}}.dump(), "application/json");
}

int64_t Int64(const json& v) {
  return v.is_string() ? std::stoll(v.get<std::string>()) : v.get<int64_t>();
}

double Double(const json& v) {
  if (!v.is_string()) return v.get<double>();
  const std::string s = v.get<std::string>();
  if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  return s == "Infinity" ? HUGE_VAL : -HUGE_VAL;
}

std::string Str(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || !it->is_string() ? "" : it->get<std::string>();
}

json KeyValues(const std::map<std::string, std::string>& m) {
  json a = json::array();
  for (const auto& [k, v] : m) a.push_back(json{{"key", k}, {"value", v}});
  return a;
}

std::string Base64(const std::string& in) {
  static const char* kChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out += kChars[(n >> 18) & 63];
    out += kChars[(n >> 12) & 63];
    out += i + 1 < in.size() ? kChars[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kChars[n & 63] : '=';
  }
  return out;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The batch limits of mlflow/utils/validation.py, with its messages.
void CheckBatchLimits(const json& body) {
  size_t m = body.value("metrics", json::array()).size();
  size_t p = body.value("params", json::array()).size();
  size_t t = body.value("tags", json::array()).size();
  auto over = [](const char* what, size_t limit, size_t got) {
    return Invalid(fmt::format(
        "A batch logging request can contain at most {} {}. Got {} {}. Please split up {} "
        "across multiple requests and try again.",
        limit, what, got, what, what));
  };
  if (m > kMaxMetricsPerBatch) throw over("metrics", kMaxMetricsPerBatch, m);
  if (p > kMaxParamsPerBatch) throw over("params", kMaxParamsPerBatch, p);
  if (t > kMaxTagsPerBatch) throw over("tags", kMaxTagsPerBatch, t);
  if (m + p + t > kMaxEntitiesPerBatch)
    throw over("metrics, params, and tags in total", kMaxEntitiesPerBatch, m + p + t);
  size_t bytes = PythonJsonSize(body);
  if (bytes > kMaxBatchBytes)
    throw Invalid(
        fmt::format("Batched logging API requests must be at most {} bytes, got "
                    "payload of length {}",
                    kMaxBatchBytes, bytes));
}

}  // namespace

MlflowDouble::MlflowDouble() : server_(std::make_unique<httplib::Server>()) {
  experiments_["Default"] = "0";
  const std::vector<std::pair<std::string, std::string>> routes = {
      {"GET", "experiments/get-by-name"},
      {"POST", "experiments/create"},
      {"POST", "runs/create"},
      {"POST", "runs/update"},
      {"GET", "runs/get"},
      {"POST", "runs/log-batch"},
      {"POST", "runs/set-tag"},
      {"POST", "registered-models/create"},
      {"GET", "registered-models/get"},
      {"POST", "model-versions/create"},
      {"POST", "registered-models/alias"}};
  for (const auto& [method, endpoint] : routes) {
    auto handler = [this, method = method, endpoint = endpoint](const httplib::Request& req,
                                                                httplib::Response& res) {
      Serve(method, endpoint, req, res);
    };
    std::string path = std::string(kApi) + endpoint;
    if (method == "GET") {
      server_->Get(path, handler);
    } else {
      server_->Post(path, handler);
    }
  }
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("MlflowDouble: cannot bind 127.0.0.1");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

MlflowDouble::~MlflowDouble() {
  server_->stop();
  thread_.join();
}

void MlflowDouble::FailNext(int n, int status, const std::string& suffix, int retry_after_s) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_next_.push_back(Fault{n, status, suffix, retry_after_s});
}

void MlflowDouble::FailRandomly(double rate, uint64_t seed) {
  std::lock_guard<std::mutex> lock(mu_);
  fault_rate_ = rate;
  rng_.seed(seed);
}

void MlflowDouble::RequireBearer(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  auth_ = "Bearer " + token;
}

void MlflowDouble::RequireBasic(const std::string& user, const std::string& password) {
  std::lock_guard<std::mutex> lock(mu_);
  auth_ = "Basic " + Base64(user + ":" + password);
}

bool MlflowDouble::Authorized(const httplib::Request& req) const {
  std::lock_guard<std::mutex> lock(mu_);
  return auth_.empty() || req.get_header_value("Authorization") == auth_;
}

bool MlflowDouble::InjectFault(const std::string& endpoint, httplib::Response& res) {
  std::lock_guard<std::mutex> lock(mu_);
  int status = 0, retry_after = -1;
  for (Fault& f : faults_next_) {
    if (f.remaining > 0 && (f.suffix.empty() || endpoint.size() >= f.suffix.size()) &&
        endpoint.compare(endpoint.size() - f.suffix.size(), f.suffix.size(), f.suffix) == 0) {
      f.remaining--;
      status = f.status;
      retry_after = f.retry_after_s;
      break;
    }
  }
  if (status == 0 && fault_rate_ > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) < fault_rate_)
    status = std::uniform_int_distribution<int>(0, 1)(rng_) ? 500 : 429;
  if (status == 0) return false;
  faults_++;
  if (retry_after >= 0) res.set_header("Retry-After", std::to_string(retry_after));
  if (status == 429) {
    SendError(res, 429, "REQUEST_LIMIT_EXCEEDED", "injected: too many requests");
  } else if (status == 401) {
    res.status = 401;
    res.set_content("You are not authenticated.", "text/plain");
  } else {
    SendError(res, status, "INTERNAL_ERROR", "injected: internal error");
  }
  return true;
}

void MlflowDouble::Serve(const std::string& method, const std::string& endpoint,
                         const httplib::Request& req, httplib::Response& res) {
  double delay = delay_s_.load();
  if (delay > 0) std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  if (!Authorized(req)) {
    // What MLflow's basic-auth app answers.
    res.status = 401;
    res.set_header("WWW-Authenticate", "Basic realm=\"mlflow\"");
    res.set_content(
        "You are not authenticated. Please see "
        "https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow "
        "on how to authenticate.",
        "text/plain");
    return;
  }
  if (InjectFault(endpoint, res)) return;
  json body = json::object();
  if (method == "GET") {
    for (const auto& [k, v] : req.params) body[k] = v;
  } else {
    if (req.get_header_value("Content-Type").rfind("application/json", 0) != 0)
      return SendError(res, 400, "INVALID_PARAMETER_VALUE",
                       "Bad Request. Content-Type must be one of ['application/json'].");
    body = json::parse(req.body, nullptr, false);
    if (body.is_discarded())
      return SendError(res, 400, "MALFORMED_REQUEST", "Malformed JSON in the request body");
  }
  std::string invalid = ValidateRequest(endpoint, body);
  if (!invalid.empty()) return SendError(res, 400, "INVALID_PARAMETER_VALUE", invalid);
  try {
    std::lock_guard<std::mutex> lock(mu_);
    handled_[endpoint]++;
    json answer = Handle(method, endpoint, body);
    res.status = 200;
    res.set_content(answer.dump(), "application/json");
  } catch (const ApiError& e) {
    SendError(res, e.status, e.code, e.what());
  }
}

json MlflowDouble::Handle(const std::string& method, const std::string& endpoint,
                          const json& body) {
  if (endpoint == "experiments/get-by-name") {
    std::string name = Str(body, "experiment_name");
    auto it = experiments_.find(name);
    if (it == experiments_.end())
      throw Missing(fmt::format("Could not find experiment with name '{}'", name));
    return {{"experiment",
             {{"experiment_id", it->second}, {"name", name}, {"lifecycle_stage", "active"}}}};
  }
  if (endpoint == "experiments/create") {
    std::string name = Str(body, "name");
    if (experiments_.count(name))
      throw ApiError(400, "RESOURCE_ALREADY_EXISTS",
                     fmt::format("Experiment(name={}) already exists.", name));
    std::string id = std::to_string(experiments_.size());
    experiments_[name] = id;
    return {{"experiment_id", id}};
  }
  if (endpoint.rfind("runs/", 0) == 0) return HandleRun(endpoint, body);
  return HandleRegistry(method, endpoint, body);
}

FakeRun& MlflowDouble::RunOrThrow(const json& body) {
  std::string id = Str(body, "run_id");
  if (id.empty()) id = Str(body, "run_uuid");
  auto it = runs_.find(id);
  if (it == runs_.end()) throw Missing(fmt::format("Run with id={} not found", id));
  return it->second;
}

json MlflowDouble::RunInfo(const FakeRun& r) const {
  json info{{"run_id", r.run_id},
            {"run_uuid", r.run_id},
            {"experiment_id", r.experiment_id},
            {"status", r.status},
            {"start_time", r.start_time},
            {"artifact_uri", "mlflow-artifacts:/" + r.run_id},
            {"lifecycle_stage", "active"}};
  if (r.end_time != 0) info["end_time"] = r.end_time;
  return info;
}

json MlflowDouble::HandleRun(const std::string& endpoint, const json& body) {
  if (endpoint == "runs/create") {
    std::string exp = Str(body, "experiment_id");
    if (exp.empty()) exp = "0";
    bool found = false;
    for (const auto& [name, id] : experiments_) found = found || id == exp;
    if (!found) throw Missing(fmt::format("No Experiment with id={} exists", exp));
    FakeRun run;
    run.run_id = fmt::format("{:032x}", next_id_++ * 0x9e3779b97f4a7c15ull);
    run.experiment_id = exp;
    run.start_time = body.contains("start_time") ? Int64(body["start_time"]) : NowMs();
    for (const auto& t : body.value("tags", json::array())) run.tags[t["key"]] = t["value"];
    runs_[run.run_id] = run;
    return {{"run", {{"info", RunInfo(run)}, {"data", {{"tags", KeyValues(run.tags)}}}}}};
  }
  if (endpoint == "runs/log-batch") return HandleLogBatch(body);
  FakeRun& run = RunOrThrow(body);
  if (endpoint == "runs/update") {
    if (body.contains("status")) run.status = body["status"];
    if (body.contains("end_time")) run.end_time = Int64(body["end_time"]);
    return {{"run_info", RunInfo(run)}};
  }
  if (endpoint == "runs/set-tag") {
    run.tags[Str(body, "key")] = Str(body, "value");
    return json::object();
  }
  // runs/get: the latest value of each metric, as MLflow's RunData has it.
  std::map<std::string, FakeMetric> latest;
  for (const FakeMetric& m : run.metrics) latest[m.key] = m;
  json metrics = json::array();
  for (const auto& [k, m] : latest)
    metrics.push_back(
        {{"key", k}, {"value", m.value}, {"timestamp", m.timestamp}, {"step", m.step}});
  return {{"run",
           {{"info", RunInfo(run)},
            {"data",
             {{"metrics", metrics},
              {"params", KeyValues(run.params)},
              {"tags", KeyValues(run.tags)}}}}}};
}

json MlflowDouble::HandleLogBatch(const json& body) {
  CheckBatchLimits(body);
  FakeRun& run = RunOrThrow(body);
  for (const auto& p : body.value("params", json::array())) {
    auto it = run.params.find(p["key"]);
    if (it != run.params.end() && it->second != p["value"])
      throw Invalid(fmt::format(
          "Changing param values is not allowed. Param with key='{}' was already logged with "
          "value='{}' for run ID='{}'. Attempted logging new value '{}'.",
          p["key"].get<std::string>(), it->second, run.run_id, p["value"].get<std::string>()));
  }
  for (const auto& p : body.value("params", json::array())) run.params[p["key"]] = p["value"];
  for (const auto& t : body.value("tags", json::array())) run.tags[t["key"]] = t["value"];
  for (const auto& m : body.value("metrics", json::array()))
    run.metrics.push_back(FakeMetric{m["key"], Double(m["value"]),
                                     m.contains("timestamp") ? Int64(m["timestamp"]) : 0,
                                     m.contains("step") ? Int64(m["step"]) : 0});
  log_batches_.push_back(body);
  return json::object();
}

FakeModel& MlflowDouble::ModelOrThrow(const std::string& name) {
  auto it = models_.find(name);
  if (it == models_.end())
    throw Missing(fmt::format("Registered Model with name={} not found", name));
  return it->second;
}

json MlflowDouble::HandleRegistry(const std::string& method, const std::string& endpoint,
                                  const json& body) {
  const std::string name = Str(body, "name");
  if (endpoint == "registered-models/create") {
    if (models_.count(name))
      throw ApiError(400, "RESOURCE_ALREADY_EXISTS",
                     fmt::format("Registered Model (name={}) already exists.", name));
    models_[name].name = name;
    return {{"registered_model", {{"name", name}, {"creation_timestamp", NowMs()}}}};
  }
  FakeModel& model = ModelOrThrow(name);
  if (endpoint == "registered-models/get") {
    json aliases = json::array();
    for (const auto& [a, v] : model.aliases) aliases.push_back({{"alias", a}, {"version", v}});
    return {{"registered_model", {{"name", name}, {"aliases", aliases}}}};
  }
  if (endpoint == "model-versions/create") {
    FakeVersion v;
    v.version = std::to_string(model.versions.size() + 1);
    v.source = Str(body, "source");
    v.run_id = Str(body, "run_id");
    for (const auto& t : body.value("tags", json::array())) v.tags[t["key"]] = t["value"];
    model.versions.push_back(v);
    return {{"model_version",
             {{"name", name},
              {"version", v.version},
              {"creation_timestamp", NowMs()},
              {"current_stage", "None"},
              {"source", v.source},
              {"run_id", v.run_id},
              {"status", "READY"},
              {"tags", KeyValues(v.tags)}}}};
  }
  // registered-models/alias (POST): set or move.
  const std::string version = Str(body, "version");
  bool exists = false;
  for (const auto& v : model.versions) exists = exists || v.version == version;
  if (!exists)
    throw Missing(fmt::format("Model Version (name={}, version={}) not found", name, version));
  model.aliases[Str(body, "alias")] = version;
  return json::object();
}

std::optional<std::string> MlflowDouble::ExperimentId(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = experiments_.find(name);
  if (it == experiments_.end()) return std::nullopt;
  return it->second;
}

std::vector<FakeRun> MlflowDouble::Runs() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<FakeRun> out;
  for (const auto& [id, run] : runs_) out.push_back(run);
  return out;
}

std::optional<FakeRun> MlflowDouble::Run(const std::string& run_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return std::nullopt;
  return it->second;
}

std::optional<FakeModel> MlflowDouble::Model(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return std::nullopt;
  return it->second;
}

int MlflowDouble::Handled(const std::string& endpoint) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handled_.find(endpoint);
  return it == handled_.end() ? 0 : it->second;
}

std::vector<json> MlflowDouble::LogBatchBodies() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_batches_;
}

}  // namespace cohort::tracking::testing
