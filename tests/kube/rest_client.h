// A plain HTTP client for the tests of the API-server double (cpp-httplib): JSON requests and
// watch streams read line by line, as any Kubernetes client sees them. Header-only.
#pragma once

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cohort::kube::testing {

using Json = nlohmann::json;

struct Answer {
  int status = 0;
  Json body;
  std::string text;
};

class Rest {
 public:
  explicit Rest(int port) : port_(port), client_("127.0.0.1", port) {
    client_.set_read_timeout(30, 0);
  }
  Answer Get(const std::string& path) { return Wrap(client_.Get(path.c_str())); }
  Answer Post(const std::string& path, const Json& body) {
    return Wrap(client_.Post(path.c_str(), body.dump(), "application/json"));
  }
  Answer Put(const std::string& path, const Json& body) {
    return Wrap(client_.Put(path.c_str(), body.dump(), "application/json"));
  }
  Answer Patch(const std::string& path, const Json& body,
               const std::string& type = "application/merge-patch+json") {
    return Wrap(client_.Patch(path.c_str(), body.dump(), type.c_str()));
  }
  Answer Delete(const std::string& path, const Json& options = Json()) {
    return Wrap(options.is_null()
                    ? client_.Delete(path.c_str())
                    : client_.Delete(path.c_str(), options.dump(), "application/json"));
  }
  // Reads a watch stream until `count` events came, the server ended it, or `timeout`.
  std::vector<Json> Watch(const std::string& path, size_t count, std::chrono::seconds timeout) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(timeout.count(), 0);
    std::vector<Json> events;
    std::string buffer;
    c.Get(path.c_str(), [&](const char* data, size_t n) {
      buffer.append(data, n);
      for (size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
        events.push_back(Json::parse(buffer.substr(0, nl)));
        buffer.erase(0, nl + 1);
      }
      return events.size() < count;
    });
    return events;
  }

 private:
  int port_;
  httplib::Client client_;
  static Answer Wrap(const httplib::Result& r) {
    Answer a;
    if (!r) return a;
    a.status = r->status;
    a.text = r->body;
    a.body = Json::parse(r->body, nullptr, false);
    return a;
  }
};

}  // namespace cohort::kube::testing
