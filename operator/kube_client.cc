#include "operator/kube_client.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/json_stream.h"

namespace cohort::k8s {

Resource ResourceOf(const Json& object) {
  const std::string kind = object.value("kind", "");
  const std::string api = object.value("apiVersion", "");
  for (const auto& [k, r] : {std::pair{"Job", kJobs},
                             {"Pod", kPods},
                             {"Service", kServices},
                             {"Secret", kSecrets},
                             {"Lease", kLeases},
                             {"MPIJob", kMpiJobs},
                             {"TrainingJob", kTrainingJobs}}) {
    if (kind == k && api == r.api_version) return r;
  }
  throw InvalidArgument(fmt::format("no resource type known for {} {}", api, kind));
}

std::string ResourcePath(const Resource& r, const std::string& ns, const std::string& name) {
  std::string path = r.api_version.find('/') == std::string::npos ? "/api/" + r.api_version
                                                                  : "/apis/" + r.api_version;
  if (!ns.empty()) path += "/namespaces/" + http::UriEncode(ns, false);
  path += "/" + r.plural;
  if (!name.empty()) path += "/" + http::UriEncode(name, false);
  return path;
}

std::string ApiResult::Message() const {
  if (body.is_object() && body.contains("message") && body["message"].is_string())
    return fmt::format("{} ({})", body["message"].get<std::string>(), status);
  return fmt::format("HTTP {}", status);
}

KubeClient::KubeClient(const KubeConfig& config, http::Options options) : config_(config) {
  options.service = "Kubernetes API server";
  options.tls = config.tls;
  options.auth_hint = "check the credentials of " + config.source +
                      " and the operator's RBAC (operator/deploy/rbac.yaml)";
  http::Auth auth = config.token.empty() ? http::Auth::None() : http::Auth::Bearer(config.token);
  http_ = std::make_unique<http::Client>(config.server, std::move(auth), std::move(options));
}

ApiResult KubeClient::Call(const std::string& method, const std::string& target, const Json* body,
                           const std::string& content_type) {
  http::Request request;
  request.method = method;
  request.target = target;
  request.headers = {"Accept: application/json"};
  std::string text;
  if (body != nullptr) {
    text = body->dump();
    request.SetBody(text);
    request.headers.push_back("Content-Type: " + content_type);
  }
  const http::Response response = http_->Send(request);
  ApiResult result;
  result.status = response.status;
  result.body = Json::parse(response.body, nullptr, false);
  if (result.body.is_discarded()) result.body = nullptr;
  return result;
}

ApiResult KubeClient::Get(const std::string& path) { return Call("GET", path, nullptr); }

ApiResult KubeClient::List(const std::string& collection, const std::string& query) {
  return Call("GET", query.empty() ? collection : collection + "?" + query, nullptr);
}

ApiResult KubeClient::Create(const std::string& collection, const Json& object) {
  return Call("POST", collection, &object);
}

ApiResult KubeClient::Update(const std::string& path, const Json& object) {
  return Call("PUT", path, &object);
}

ApiResult KubeClient::MergePatch(const std::string& path, const Json& patch) {
  return Call("PATCH", path, &patch, "application/merge-patch+json");
}

ApiResult KubeClient::UpdateStatus(const std::string& path, const Json& object) {
  return Call("PUT", path + "/status", &object);
}

ApiResult KubeClient::Delete(const std::string& path, const std::string& propagation) {
  return Call("DELETE", path + "?propagationPolicy=" + propagation, nullptr);
}

WatchEnd KubeClient::Watch(const std::string& collection, const std::string& resource_version,
                           int timeout_s, const std::function<bool(const WatchEvent&)>& on_event) {
  http::Request request;
  request.target = fmt::format(
      "{}?watch=true&allowWatchBookmarks=false&timeoutSeconds={}{}", collection, timeout_s,
      resource_version.empty() ? ""
                               : "&resourceVersion=" + http::UriEncode(resource_version, false));
  request.headers = {"Accept: application/json"};
  request.what = "watch " + collection;
  JsonObjectSplitter splitter;
  bool gone = false;
  const auto on_object = [&](std::string_view text) {
    WatchEvent event;
    Json parsed = Json::parse(text, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object())
      throw DataLoss("the API server sent a watch event that is not JSON: " +
                     http::OneLine(std::string(text)));
    event.type = parsed.value("type", "");
    event.object = std::move(parsed["object"]);
    if (event.type == "ERROR" && event.object.is_object() && event.object.value("code", 0) == 410) {
      gone = true;
      return false;
    }
    return on_event(event);
  };
  const http::StreamResult result =
      http_->Stream(request, timeout_s + 10.0,
                    [&](std::string_view data) { return splitter.Feed(data, on_object); });
  if (gone || result.response.status == 410) return WatchEnd::kGone;
  if (result.end == http::StreamResult::End::kStopped) return WatchEnd::kStopped;
  if (result.response.status / 100 != 2 && result.end == http::StreamResult::End::kEnded) {
    throw Unavailable(fmt::format("{} refused {}: HTTP {} {}", http_->Name(), request.what,
                                  result.response.status, http::OneLine(result.response.body)));
  }
  return WatchEnd::kClosed;
}

}  // namespace cohort::k8s
