#include "tests/util/kube/http_api.h"

#include <httplib.h>
#include <signal.h>

#include <fstream>
#include <sstream>

#include "tests/util/kube/api_error.h"
#include "tests/util/kube/openapi.h"
#include "tests/util/kube/table.h"

namespace cohort::kube {
namespace {

const char kJson[] = "application/json";

std::vector<std::string> Segments(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream ss(path);
  for (std::string s; std::getline(ss, s, '/');) {
    if (!s.empty()) out.push_back(s);
  }
  return out;
}

void Reply(httplib::Response& res, int code, const Json& body) {
  res.status = code;
  res.set_content(body.dump(), kJson);
}

void ReplyError(httplib::Response& res, const ApiError& e) { Reply(res, e.code(), e.ToStatus()); }

Json Body(const httplib::Request& req) {
  if (req.get_header_value("Content-Type").find("protobuf") != std::string::npos) {
    // kubectl's typed clients (create namespace, create secret ...) send protobuf.
    throw ApiError(415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: application/json (this double reads no protobuf: use kubectl apply)");
  }
  Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    throw BadRequest(
        "the body of the request could not be decoded as JSON (send "
        "Content-Type: application/json)");
  }
  return body;
}

std::string Query(const httplib::Request& req) {
  std::string q;
  for (const auto& [k, v] : req.params) q += (q.empty() ? "" : "&") + k + "=" + v;
  return q;
}

std::optional<FieldSelector> Fields(const httplib::Request& req, const ResourceType& t) {
  if (!req.has_param("fieldSelector")) return std::nullopt;
  return FieldSelector(req.get_param_value("fieldSelector"), t.plural);
}

}  // namespace

HttpApi::HttpApi(ObjectStore& store, ResourceRegistry& registry, std::chrono::seconds watch_timeout)
    : store_(store), registry_(registry), watch_timeout_(watch_timeout) {}

void HttpApi::Install(httplib::Server& server, int port) {
  port_ = port;
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); };
  server.Get(".*", handler);
  server.Post(".*", handler);
  server.Put(".*", handler);
  server.Patch(".*", handler);
  server.Delete(".*", handler);
}

void HttpApi::Stop() { stopping_ = true; }

void HttpApi::FailNext(int count, int code, const std::string& method, const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_count_ = count;
  fail_code_ = code;
  fail_method_ = method;
  fail_path_ = path;
}

void HttpApi::SetPods(
    std::function<std::optional<pid_t>(const std::string&, const std::string&)> pid,
    std::function<std::string(const std::string&, const std::string&)> log) {
  pod_pid_ = std::move(pid);
  pod_log_ = std::move(log);
}

std::vector<RecordedRequest> HttpApi::Requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

void HttpApi::Handle(const httplib::Request& req, httplib::Response& res) {
  try {
    if (Hooks(req, res)) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (requests_.size() < 100000) {
        requests_.push_back(
            {req.method, req.path, Query(req), req.get_header_value("Content-Type")});
      }
    }
    if (Injected(req, res) || Discovery(req, res)) return;
    Resource(req, res);
  } catch (const ApiError& e) {
    ReplyError(res, e);
  } catch (const nlohmann::json::exception& e) {
    ReplyError(res, BadRequest(std::string("the object could not be processed: ") + e.what()));
  } catch (const std::exception& e) {
    ReplyError(res,
               ApiError(500, "InternalError", std::string("Internal error occurred: ") + e.what()));
  }
}

bool HttpApi::Hooks(const httplib::Request& req, httplib::Response& res) {
  if (req.path.rfind("/_double/", 0) != 0) return false;
  if (req.path == "/_double/compact" && req.method == "POST") {
    store_.Compact();
    Reply(res, 200, {{"resourceVersion", std::to_string(store_.ResourceVersion())}});
  } else if (req.path == "/_double/drop-watches" && req.method == "POST") {
    store_.DropWatches();
    Reply(res, 200, Json::object());
  } else if (req.path == "/_double/fail" && req.method == "POST") {
    FailNext(std::stoi(req.get_param_value("count")), std::stoi(req.get_param_value("code")),
             req.get_param_value("method"), req.get_param_value("path"));
    Reply(res, 200, Json::object());
  } else if ((req.path == "/_double/pid" || req.path == "/_double/signal") && pod_pid_) {
    const std::string ns = req.get_param_value("namespace"), name = req.get_param_value("name");
    auto pid = pod_pid_(ns, name);
    if (!pid) throw ApiError(404, "NotFound", "pod " + ns + "/" + name + " has no process");
    if (req.path == "/_double/signal") ::kill(-*pid, std::stoi(req.get_param_value("signal")));
    Reply(res, 200, {{"pid", *pid}});
  } else if (req.path == "/_double/requests" && req.method == "GET") {
    Json out = Json::array();
    for (const auto& r : Requests()) {
      out.push_back({{"method", r.method},
                     {"path", r.path},
                     {"query", r.query},
                     {"contentType", r.content_type}});
    }
    Reply(res, 200, out);
  } else {
    throw NotFound("hooks", "", req.path);
  }
  return true;
}

bool HttpApi::Injected(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fail_count_ <= 0) return false;
  if (!fail_method_.empty() && fail_method_ != req.method) return false;
  if (!fail_path_.empty() && req.path.find(fail_path_) == std::string::npos) return false;
  --fail_count_;
  const std::string reason = fail_code_ == 429   ? "TooManyRequests"
                             : fail_code_ == 503 ? "ServiceUnavailable"
                                                 : "InternalError";
  if (fail_code_ == 429) res.set_header("Retry-After", "1");
  ReplyError(res, ApiError(fail_code_, reason, "injected by the test: " + reason));
  return true;
}

bool HttpApi::Discovery(const httplib::Request& req, httplib::Response& res) {
  if (req.method != "GET") return false;
  const std::vector<std::string> s = Segments(req.path);
  if (req.path == "/version") {
    Reply(res, 200,
          {{"major", "1"},
           {"minor", "32"},
           {"gitVersion", "v1.32.0-cohort-double"},
           {"gitCommit", "0000000000000000000000000000000000000000"},
           {"gitTreeState", "clean"},
           {"buildDate", "2026-01-01T00:00:00Z"},
           {"goVersion", "go1.23"},
           {"compiler", "gc"},
           {"platform", "linux/amd64"}});
  } else if (req.path == "/healthz" || req.path == "/readyz" || req.path == "/livez") {
    res.set_content("ok", "text/plain");
  } else if (req.path == "/openapi/v2") {
    const std::string accept = req.get_header_value("Accept");
    if (accept.find("protobuf") != std::string::npos) {
      // kubectl asks for the protobuf form; an empty openapi_v2.Document encodes as no bytes.
      res.set_content("", "application/octet-stream");  // Go cannot parse the "@" form
    } else {
      Reply(res, 200, OpenApiV2());
    }
  } else if (req.path == "/openapi/v3") {
    Reply(res, 200, OpenApiV3Index(registry_));
  } else if (req.path.rfind("/openapi/v3/", 0) == 0) {
    auto doc = OpenApiV3GroupVersion(registry_, req.path.substr(12));
    if (!doc) throw ApiError(404, "NotFound", "the server could not find the requested resource");
    Reply(res, 200, *doc);
  } else if (s.size() == 1 && s[0] == "api") {
    Reply(res, 200, registry_.CoreVersions("127.0.0.1:" + std::to_string(port_)));
  } else if (s.size() == 1 && s[0] == "apis") {
    Reply(res, 200, registry_.GroupList());
  } else if (s.size() == 2 && s[0] == "apis") {
    auto g = registry_.Group(s[1]);
    if (!g) throw ApiError(404, "NotFound", "the server could not find the requested resource");
    Reply(res, 200, *g);
  } else if ((s.size() == 2 && s[0] == "api") || (s.size() == 3 && s[0] == "apis")) {
    auto list =
        s[0] == "api" ? registry_.ResourceList("", s[1]) : registry_.ResourceList(s[1], s[2]);
    if (!list) throw ApiError(404, "NotFound", "the server could not find the requested resource");
    Reply(res, 200, *list);
  } else {
    return false;
  }
  return true;
}

void HttpApi::Resource(const httplib::Request& req, httplib::Response& res) {
  const std::vector<std::string> s = Segments(req.path);
  const auto not_found =
      ApiError(404, "NotFound", "the server could not find the requested resource");
  size_t at;
  std::string group, version;
  if (s.size() >= 3 && s[0] == "api") {
    version = s[1];
    at = 2;
  } else if (s.size() >= 4 && s[0] == "apis") {
    group = s[1];
    version = s[2];
    at = 3;
  } else {
    throw not_found;
  }
  std::vector<std::string> rest(s.begin() + at, s.end());
  std::string ns, plural, name, sub;
  const bool ns_sub =
      rest.size() == 3 && rest[0] == "namespaces" && (rest[2] == "status" || rest[2] == "finalize");
  if (rest.size() >= 3 && rest[0] == "namespaces" && !ns_sub) {
    ns = rest[1];
    rest.erase(rest.begin(), rest.begin() + 2);
  }
  if (rest.empty() || rest.size() > 3) throw not_found;
  plural = rest[0];
  if (rest.size() > 1) name = rest[1];
  if (rest.size() > 2) sub = rest[2];
  auto t = registry_.Find(group, version, plural);
  if (!t) throw not_found;
  if (!t->namespaced && !ns.empty()) throw not_found;
  if (sub == "log" && t->plural == "pods" && t->group.empty() && req.method == "GET") {
    store_.Get(*t, ns, name);  // 404 for a pod that does not exist
    const std::string path = pod_log_ ? pod_log_(ns, name) : "";
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    res.set_content(text.str(), "text/plain");
    return;
  }
  if (!sub.empty() && !(sub == "status" && t->has_status) && !(ns_sub && sub == "finalize")) {
    throw not_found;
  }
  Serve(req, res, *t, ns, name, sub);
}

void HttpApi::Serve(const httplib::Request& req, httplib::Response& res, const ResourceType& t,
                    const std::string& ns, const std::string& name, const std::string& sub) {
  const bool table = WantsTable(req.get_header_value("Accept"));
  const std::string include =
      req.has_param("includeObject") ? req.get_param_value("includeObject") : "Metadata";
  const bool status = !sub.empty();
  if (t.namespaced && ns.empty() && !name.empty()) {
    throw ApiError(404, "NotFound", "the server could not find the requested resource");
  }
  if (req.method == "GET" && name.empty()) {
    const std::string w = req.get_param_value("watch");
    if (w == "true" || w == "1") return ServeWatch(req, res, t, ns);
    Json list =
        store_.List(t, ns, LabelSelector(req.get_param_value("labelSelector")), Fields(req, t));
    return Reply(res, 200, table ? ToTable(t, list, include) : list);
  }
  if (req.method == "GET") {
    Json o = store_.Get(t, ns, name);
    return Reply(res, 200, table ? ToTable(t, o, include) : o);
  }
  if (req.has_param("dryRun")) {
    throw BadRequest("dryRun is not supported by this test double: apply without --dry-run");
  }
  const std::string validation = req.get_param_value("fieldValidation");
  if (req.method == "POST" && name.empty()) {
    return Reply(res, 201, store_.Create(t, ns, Body(req), validation));
  }
  if (req.method == "PUT" && !name.empty()) {
    return Reply(res, 200, store_.Update(t, ns, name, Body(req), status, validation));
  }
  if (req.method == "PATCH" && !name.empty()) {
    return Reply(res, 200,
                 store_.Patch(t, ns, name, req.body, req.get_header_value("Content-Type"), status,
                              validation));
  }
  if (req.method == "DELETE" && !status) return ServeDelete(req, res, t, ns, name);
  throw ApiError(405, "MethodNotAllowed",
                 "the server does not allow this method on the requested resource");
}

void HttpApi::ServeDelete(const httplib::Request& req, httplib::Response& res,
                          const ResourceType& t, const std::string& ns, const std::string& name) {
  DeleteOptions options;
  if (!req.body.empty()) {
    const Json body = Body(req);
    options.propagation = body.value("propagationPolicy", "");
    if (body.value("orphanDependents", false)) options.propagation = "Orphan";
    const Json pre = body.value("preconditions", Json::object());
    options.precondition_uid = pre.value("uid", "");
    options.precondition_rv = pre.value("resourceVersion", "");
  }
  if (req.has_param("propagationPolicy")) {
    options.propagation = req.get_param_value("propagationPolicy");
  }
  if (options.propagation.empty() && t.plural == "jobs" && t.group == "batch") {
    res.set_header("Warning",
                   "299 - \"child pods are preserved by default when jobs are deleted; set "
                   "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to "
                   "suppress this warning\"");
  }
  if (name.empty()) {  // deletecollection
    Json list =
        store_.List(t, ns, LabelSelector(req.get_param_value("labelSelector")), Fields(req, t));
    for (const auto& o : list["items"]) {
      try {
        store_.Delete(t, o["metadata"].value("namespace", ""), o["metadata"]["name"], options);
      } catch (const ApiError& e) {
        if (e.code() != 404) throw;
      }
    }
    return Reply(res, 200, list);
  }
  Json gone = store_.Delete(t, ns, name, options);
  if (gone["metadata"].contains("deletionTimestamp") &&
      !gone["metadata"].value("finalizers", Json::array()).empty()) {
    return Reply(res, 200, gone);  // finalizers keep it for now: the object, marked
  }
  if (t.plural == "pods" && t.group.empty()) return Reply(res, 200, gone);
  Reply(res, 200,
        {{"kind", "Status"},
         {"apiVersion", "v1"},
         {"metadata", Json::object()},
         {"status", "Success"},
         {"details",
          {{"name", name},
           {"group", t.group},
           {"kind", t.plural},
           {"uid", gone["metadata"].value("uid", "")}}}});
}

void HttpApi::ServeWatch(const httplib::Request& req, httplib::Response& res, const ResourceType& t,
                         const std::string& ns) {
  std::chrono::seconds timeout = watch_timeout_;
  if (req.has_param("timeoutSeconds")) {
    timeout = std::chrono::seconds(std::stoll(req.get_param_value("timeoutSeconds")));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::shared_ptr<Watch> watch;
  std::string first;  // an ERROR event instead of a watch (410 Expired)
  try {
    watch = store_.OpenWatch(t, ns, LabelSelector(req.get_param_value("labelSelector")),
                             Fields(req, t), req.get_param_value("resourceVersion"));
  } catch (const ApiError& e) {
    if (e.code() != 410) throw;
    first = Json({{"type", "ERROR"}, {"object", e.ToStatus()}}).dump() + "\n";
  }
  res.status = 200;
  res.set_chunked_content_provider(
      kJson, [this, watch, first, deadline](size_t, httplib::DataSink& sink) {
        if (!first.empty()) {
          sink.write(first.data(), first.size());
          sink.done();
          return true;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (stopping_ || watch->closed() || left.count() <= 0) {
          watch->Close();
          sink.done();
          return true;
        }
        auto e = watch->Next(std::min(left, std::chrono::milliseconds(200)));
        if (!e) return true;
        const std::string line = Json({{"type", e->type}, {"object", e->object}}).dump() + "\n";
        if (!sink.write(line.data(), line.size())) {
          watch->Close();
          return false;
        }
        return true;
      });
}

}  // namespace cohort::kube
