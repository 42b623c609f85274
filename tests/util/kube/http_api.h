// The HTTP face of the API-server double: Kubernetes' REST paths on a cpp-httplib server.
//   GET /version, /healthz, /readyz, /livez, /api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v>
//   /api/v1/[namespaces/<ns>/]<plural>[/<name>[/status]] and /apis/<g>/<v>/... :
//     GET (get, list, ?watch=true), POST (create), PUT (update), PATCH, DELETE (one object or a
//     collection); labelSelector, fieldSelector, resourceVersion, timeoutSeconds,
//     propagationPolicy; Table answers when the Accept header asks for them.
//   /openapi/v3[/<group version>], /openapi/v2: the documents kubectl reads (openapi.h).
//   GET /api/v1/namespaces/<ns>/pods/<name>/log: the pod process's output (kubectl logs).
//   Test hooks under /_double/: POST compact, POST drop-watches, POST fail?count=N&code=C
//     [&method=M][&path=SUBSTRING], GET requests (every request seen: method, path, query,
//     content type), GET pid?namespace=NS&name=POD (the pod process's pid, which is also its
//     process group), POST signal?namespace=NS&name=POD&signal=N (to that group).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/util/kube/object_store.h"
#include "tests/util/kube/resource_types.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace cohort::kube {

struct RecordedRequest {
  std::string method, path, query, content_type;
};

class HttpApi {
 public:
  // watch_timeout: how long a watch without timeoutSeconds stays open (the real server picks
  // 30-60 minutes; clients must reconnect either way).
  HttpApi(ObjectStore& store, ResourceRegistry& registry, std::chrono::seconds watch_timeout);
  void Install(httplib::Server& server, int port);
  void Stop();  // ends every watch stream, so the server can shut down

  // The next `count` requests (matching method and a path substring when given) answer `code`
  // with an InternalError (500), ServiceUnavailable (503) or TooManyRequests (429) Status.
  void FailNext(int count, int code, const std::string& method, const std::string& path);
  std::vector<RecordedRequest> Requests() const;
  // Where pods run: their pid (nullopt when not running) and log file ("" when none).
  void SetPods(std::function<std::optional<pid_t>(const std::string&, const std::string&)> pid,
               std::function<std::string(const std::string&, const std::string&)> log);

 private:
  ObjectStore& store_;
  ResourceRegistry& registry_;
  std::chrono::seconds watch_timeout_;
  std::atomic<bool> stopping_{false};
  int port_ = 0;
  mutable std::mutex mu_;
  std::vector<RecordedRequest> requests_;
  int fail_count_ = 0, fail_code_ = 500;
  std::string fail_method_, fail_path_;
  std::function<std::optional<pid_t>(const std::string&, const std::string&)> pod_pid_;
  std::function<std::string(const std::string&, const std::string&)> pod_log_;

  void Handle(const httplib::Request& req, httplib::Response& res);
  bool Hooks(const httplib::Request& req, httplib::Response& res);
  bool Discovery(const httplib::Request& req, httplib::Response& res);
  bool Injected(const httplib::Request& req, httplib::Response& res);
  void Resource(const httplib::Request& req, httplib::Response& res);
  void Serve(const httplib::Request& req, httplib::Response& res, const ResourceType& t,
             const std::string& ns, const std::string& name, const std::string& sub);
  void ServeWatch(const httplib::Request& req, httplib::Response& res, const ResourceType& t,
                  const std::string& ns);
  void ServeDelete(const httplib::Request& req, httplib::Response& res, const ResourceType& t,
                   const std::string& ns, const std::string& name);
};

}  // namespace cohort::kube
