// A Kubernetes API client over cohort's HTTP layer (common/http.h): get, list, create, update,
// merge-patch, the status subresource, delete and watch, on JSON objects. Answers come back with
// their status so that the caller judges 404, 409 and 410 itself; 5xx, 429 and connection errors
// are retried by the HTTP layer, and 401/403 throw Unauthenticated naming the config.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/http.h"
#include "operator/kube_config.h"

namespace cohort::k8s {

using Json = nlohmann::ordered_json;  // keeps the order objects were written in

// A resource type: its apiVersion ("v1", "batch/v1", "cohort.dev/v1alpha1") and plural name.
struct Resource {
  std::string api_version;
  std::string plural;
};

inline const Resource kTrainingJobs{"cohort.dev/v1alpha1", "trainingjobs"};
inline const Resource kJobs{"batch/v1", "jobs"};
inline const Resource kPods{"v1", "pods"};
inline const Resource kServices{"v1", "services"};
inline const Resource kSecrets{"v1", "secrets"};
inline const Resource kLeases{"coordination.k8s.io/v1", "leases"};
inline const Resource kEvents{"v1", "events"};
inline const Resource kMpiJobs{"kubeflow.org/v2beta1", "mpijobs"};

// The resource type of an object's apiVersion and kind (the kinds the operator creates).
// Throws InvalidArgument for another kind.
Resource ResourceOf(const Json& object);

// "/api/v1/namespaces/NS/pods[/NAME]" or "/apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]";
// ns empty: across namespaces ("/apis/GROUP/VERSION/PLURAL").
std::string ResourcePath(const Resource& r, const std::string& ns, const std::string& name = "");

struct ApiResult {
  long status = 0;
  Json body;  // the object, list or meta/v1 Status (null when the answer was not JSON)
  bool ok() const { return status / 100 == 2; }
  // The Status's message, or the status code, for one-line messages.
  std::string Message() const;
};

struct WatchEvent {
  std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK or ERROR
  Json object;
};

// How a watch ended: the server closed it (timeoutSeconds), the callback stopped it, or the
// resourceVersion is too old (410 Gone, as an answer or an ERROR event): list again.
enum class WatchEnd { kClosed, kStopped, kGone };

class KubeClient {
 public:
  // http_options: its service, tls and auth_hint are set from config; the rest (retries,
  // timeouts) as given.
  explicit KubeClient(const KubeConfig& config, http::Options http_options = {});

  ApiResult Get(const std::string& path);
  // Query text after '?', already encoded: "labelSelector=a%3Db".
  ApiResult List(const std::string& collection, const std::string& query = "");
  ApiResult Create(const std::string& collection, const Json& object);
  ApiResult Update(const std::string& path, const Json& object);  // PUT: 409 on a stale version
  ApiResult MergePatch(const std::string& path, const Json& patch);
  ApiResult UpdateStatus(const std::string& path, const Json& object);  // PUT path/status
  // propagation: Background (owned objects go too, after), Foreground or Orphan (batch/v1
  // Jobs default to Orphan: their pods would stay).
  ApiResult Delete(const std::string& path, const std::string& propagation = "Background");

  // Watches `collection` from resource_version, for at most timeout_s (the server's
  // timeoutSeconds), handing each event to on_event until it returns false. Throws Unavailable
  // when the server cannot be reached or the stream breaks off (the caller reconnects), and
  // InvalidArgument (one line) on another refusal of the watch.
  WatchEnd Watch(const std::string& collection, const std::string& resource_version, int timeout_s,
                 const std::function<bool(const WatchEvent&)>& on_event);

  const KubeConfig& config() const { return config_; }

 private:
  ApiResult Call(const std::string& method, const std::string& target, const Json* body,
                 const std::string& content_type = "application/json");

  KubeConfig config_;
  std::unique_ptr<http::Client> http_;
};

}  // namespace cohort::k8s
