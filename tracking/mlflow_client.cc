#include "tracking/mlflow_client.h"

#include <fmt/format.h>

#include "common/env.h"
#include "common/error.h"

namespace cohort::tracking {
namespace {

using nlohmann::json;

const char* kApi = "/api/2.0/mlflow/";

// MLflow's error JSON, or "" when the body is not one.
MlflowError ParseError(const http::Response& r) {
  MlflowError e;
  e.status = r.status;
  json j = json::parse(r.body, nullptr, false);
  if (j.is_object()) {
    if (j.contains("error_code") && j["error_code"].is_string()) e.error_code = j["error_code"];
    if (j.contains("message") && j["message"].is_string()) e.message = j["message"];
  } else {
    e.message = http::OneLine(r.body, 200);
  }
  return e;
}

http::Options HttpOptions(const MlflowConfig& c, std::function<bool()> cancelled) {
  http::Options o;
  o.service = "MLflow server";
  o.max_attempts = c.max_attempts;
  o.backoff_initial_s = c.backoff_initial_s;
  o.backoff_max_s = c.backoff_max_s;
  o.connect_timeout_s = c.connect_timeout_s;
  o.request_timeout_s = c.request_timeout_s;
  o.auth_hint =
      "check MLFLOW_TRACKING_TOKEN (bearer) or MLFLOW_TRACKING_USERNAME / "
      "MLFLOW_TRACKING_PASSWORD (basic)";
  o.detail = [](const http::Response& r) {
    MlflowError e = ParseError(r);
    return e.error_code.empty() ? e.message : e.error_code + ": " + e.message;
  };
  o.cancelled = std::move(cancelled);
  return o;
}

http::Auth AuthOf(const MlflowConfig& c) {
  if (!c.token.empty()) return http::Auth::Bearer(c.token);
  if (!c.username.empty()) return http::Auth::Basic(c.username, c.password);
  return http::Auth::None();
}

}  // namespace

const char* RunStatusName(RunStatus s) {
  switch (s) {
    case RunStatus::kRunning:
      return "RUNNING";
    case RunStatus::kScheduled:
      return "SCHEDULED";
    case RunStatus::kFinished:
      return "FINISHED";
    case RunStatus::kFailed:
      return "FAILED";
    case RunStatus::kKilled:
      return "KILLED";
  }
  return "RUNNING";
}

std::optional<MlflowConfig> MlflowConfig::FromEnv() {
  auto uri = env::kMlflowTrackingUri.Get();
  if (!uri) return std::nullopt;
  if (uri->rfind("http://", 0) != 0 && uri->rfind("https://", 0) != 0)
    throw InvalidArgument(fmt::format(
        "{}='{}' is not an http(s):// tracking server; cohort logs over MLflow's REST API only "
        "(start `mlflow server` and set e.g. http://127.0.0.1:5000, or unset it)",
        env::kMlflowTrackingUri.name(), *uri));
  MlflowConfig c;
  c.tracking_uri = *uri;
  c.experiment_name = env::kMlflowExperimentName.Str(c.experiment_name);
  c.run_id = env::kMlflowRunId.Str("");
  c.token = env::kMlflowTrackingToken.Str("");
  c.username = env::kMlflowTrackingUsername.Str("");
  c.password = env::kMlflowTrackingPassword.Str("");
  return c;
}

MlflowClient::MlflowClient(MlflowConfig config, std::function<bool()> cancelled)
    : config_(std::move(config)) {
  std::string base = config_.tracking_uri;
  size_t scheme_end = base.find("://");
  size_t path =
      scheme_end == std::string::npos ? std::string::npos : base.find('/', scheme_end + 3);
  if (path != std::string::npos) {
    prefix_ = base.substr(path);
    base = base.substr(0, path);
    while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
  }
  http_ = std::make_unique<http::Client>(base, AuthOf(config_),
                                         HttpOptions(config_, std::move(cancelled)));
}

json MlflowClient::Call(const std::string& method, const std::string& path, const json& body,
                        MlflowError* error) {
  *error = MlflowError();
  http::Request r;
  r.method = method;
  r.target = prefix_ + kApi + path;
  std::string text;
  if (method == "GET") {
    char sep = '?';
    for (const auto& [k, v] : body.items()) {
      r.target += sep + http::UriEncode(k, false) + "=" +
                  http::UriEncode(v.is_string() ? v.get<std::string>() : v.dump(), false);
      sep = '&';
    }
  } else {
    text = body.dump();
    r.SetBody(text);
    r.headers.push_back("Content-Type: application/json");
  }
  http::Response answer = http_->Send(r);
  if (answer.status >= 200 && answer.status < 300) {
    json j = json::parse(answer.body, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }
  *error = ParseError(answer);
  return nullptr;
}

json MlflowClient::CallOrThrow(const std::string& method, const std::string& path,
                               const json& body) {
  MlflowError error;
  json j = Call(method, path, body, &error);
  if (error.status != 0) Throw(method, path, error);
  return j;
}

void MlflowClient::Throw(const std::string& method, const std::string& path,
                         const MlflowError& e) const {
  std::string what =
      fmt::format("{} rejected {} {}{}: HTTP {}{}{}{}", ServerName(), method, prefix_, kApi + path,
                  e.status, e.error_code.empty() ? "" : " " + e.error_code,
                  e.message.empty() ? "" : ": ", http::OneLine(e.message));
  if (e.status == 404 && e.error_code.empty())
    throw InvalidArgument(what + "; check MLFLOW_TRACKING_URI (no MLflow REST API at that path)");
  throw InvalidArgument(what);
}

namespace {

json KeyValues(const std::vector<KeyValue>& kvs) {
  json a = json::array();
  for (const auto& [k, v] : kvs) a.push_back(json{{"key", k}, {"value", v}});
  return a;
}

std::string StringAt(const json& j, const json::json_pointer& at) {
  return j.contains(at) && j[at].is_string() ? j[at].get<std::string>() : "";
}

}  // namespace

std::string MlflowClient::GetOrCreateExperiment(const std::string& name) {
  for (int round = 0; round < 2; ++round) {
    MlflowError error;
    json got = Call("GET", "experiments/get-by-name", {{"experiment_name", name}}, &error);
    if (error.status == 0) return StringAt(got, "/experiment/experiment_id"_json_pointer);
    if (error.error_code != "RESOURCE_DOES_NOT_EXIST")
      Throw("GET", "experiments/get-by-name", error);
    json made = Call("POST", "experiments/create", {{"name", name}}, &error);
    if (error.status == 0) return StringAt(made, "/experiment_id"_json_pointer);
    // Another process created it between our get and create: get it again.
    if (error.error_code != "RESOURCE_ALREADY_EXISTS") Throw("POST", "experiments/create", error);
  }
  throw Internal(
      fmt::format("{}: experiment '{}' neither exists nor can be created", ServerName(), name));
}

std::string MlflowClient::CreateRun(const std::string& experiment_id, int64_t start_time_ms,
                                    const std::vector<KeyValue>& tags) {
  json body{
      {"experiment_id", experiment_id}, {"start_time", start_time_ms}, {"tags", KeyValues(tags)}};
  json run = CallOrThrow("POST", "runs/create", body);
  std::string id = StringAt(run, "/run/info/run_id"_json_pointer);
  if (id.empty())
    throw Internal(fmt::format("{} answered runs/create without run.info.run_id: {}", ServerName(),
                               http::OneLine(run.dump(), 200)));
  return id;
}

std::string MlflowClient::GetRunStatus(const std::string& run_id) {
  json run = CallOrThrow("GET", "runs/get", {{"run_id", run_id}});
  return StringAt(run, "/run/info/status"_json_pointer);
}

void MlflowClient::UpdateRun(const std::string& run_id, RunStatus status, int64_t end_time_ms) {
  json body{{"run_id", run_id}, {"status", RunStatusName(status)}};
  if (end_time_ms >= 0) body["end_time"] = end_time_ms;
  CallOrThrow("POST", "runs/update", body);
}

void MlflowClient::LogBatch(const std::string& run_id, Batch batch) {
  for (const Batch& piece : SplitBatch(std::move(batch)))
    CallOrThrow("POST", "runs/log-batch", BatchJson(run_id, piece));
}

void MlflowClient::SetTag(const std::string& run_id, const std::string& key,
                          const std::string& value) {
  CallOrThrow("POST", "runs/set-tag", {{"run_id", run_id}, {"key", key}, {"value", value}});
}

bool MlflowClient::EnsureRegisteredModel(const std::string& name) {
  MlflowError error;
  Call("GET", "registered-models/get", {{"name", name}}, &error);
  if (error.status == 0) return false;
  if (error.error_code != "RESOURCE_DOES_NOT_EXIST") Throw("GET", "registered-models/get", error);
  Call("POST", "registered-models/create", {{"name", name}}, &error);
  if (error.status == 0) return true;
  if (error.error_code == "RESOURCE_ALREADY_EXISTS") return false;  // created meanwhile
  Throw("POST", "registered-models/create", error);
}

ModelVersion MlflowClient::CreateModelVersion(const std::string& name, const std::string& source,
                                              const std::string& run_id,
                                              const std::vector<KeyValue>& tags) {
  json body{{"name", name}, {"source", source}, {"tags", KeyValues(tags)}};
  if (!run_id.empty()) body["run_id"] = run_id;
  json made = CallOrThrow("POST", "model-versions/create", body);
  ModelVersion v;
  v.name = StringAt(made, "/model_version/name"_json_pointer);
  v.version = StringAt(made, "/model_version/version"_json_pointer);
  v.source = StringAt(made, "/model_version/source"_json_pointer);
  v.run_id = StringAt(made, "/model_version/run_id"_json_pointer);
  return v;
}

void MlflowClient::SetAlias(const std::string& name, const std::string& alias,
                            const std::string& version) {
  CallOrThrow("POST", "registered-models/alias",
              {{"name", name}, {"alias", alias}, {"version", version}});
}

}  // namespace cohort::tracking
