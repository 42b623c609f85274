#include "tests/checkpoint/store/fault_proxy.h"

#include <httplib.h>

#include <chrono>
#include <stdexcept>
#include <thread>

namespace cohort::checkpoint::testing {

FaultProxy::FaultProxy(std::string upstream_host, int upstream_port, double fault_rate,
                       uint64_t seed)
    : upstream_host_(std::move(upstream_host)),
      upstream_port_(upstream_port),
      fault_rate_(fault_rate),
      rng_(seed),
      server_(std::make_unique<httplib::Server>()) {
  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    int now = ++in_flight_;
    for (int seen = max_concurrent_;
         now > seen && !max_concurrent_.compare_exchange_weak(seen, now);)
      ;
    ++requests_;
    // httplib would apply the request's Range header to whatever body we answer with, again:
    // upstream already did (206), and an injected error body must not become a 416.
    const_cast<httplib::Request&>(req).ranges.clear();
    Fault fault = Decide(req.method, req.target);
    auto fail = [&] {
      ++faults_;
      bool slow_down = (requests_ % 2) == 0;
      res.status = slow_down ? 503 : 500;
      res.set_content(slow_down ? "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>"
                                  "injected by the test proxy</Message></Error>"
                                : "<?xml version=\"1.0\"?><Error><Code>InternalError</Code>"
                                  "<Message>injected by the test proxy</Message></Error>",
                      "application/xml");
    };
    if (fault == Fault::kBefore) {
      fail();
      --in_flight_;
      return;
    }
    httplib::Client client(upstream_host_, upstream_port_);
    client.set_url_encode(false);  // the target is already encoded, and signed as it is
    client.set_read_timeout(60, 0);
    client.set_write_timeout(60, 0);
    httplib::Request up;
    up.method = req.method;
    up.path = req.target;
    up.body = req.body;
    for (const auto& [name, value] : req.headers) {
      if (name == "REMOTE_ADDR" || name == "REMOTE_PORT" || name == "LOCAL_ADDR" ||
          name == "LOCAL_PORT" || name == "Content-Length")
        continue;
      up.headers.emplace(name, value);  // Host included: the signature covers it
    }
    httplib::Response answer;
    httplib::Error error = httplib::Error::Success;
    if (!client.send(up, answer, error)) {
      res.status = 502;
      res.set_content("upstream failed: " + httplib::to_string(error), "text/plain");
    } else if (fault == Fault::kAfter) {
      fail();
    } else {
      res.status = answer.status;
      for (const auto& [name, value] : answer.headers)
        if (name != "Content-Length" && name != "Transfer-Encoding" && name != "Connection")
          res.headers.emplace(name, value);
      if (req.method == "HEAD") {
        // No body, but the object's length, as upstream said.
        res.set_header("Content-Length", answer.get_header_value("Content-Length"));
      } else {
        res.body = std::move(answer.body);
      }
    }
    --in_flight_;
  };
  server_->Get(".*", handler);  // also HEAD
  server_->Put(".*", handler);
  server_->Post(".*", handler);
  server_->Delete(".*", handler);
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("fault proxy: cannot bind a port on 127.0.0.1");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  for (int i = 0; i < 5000 && !server_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

FaultProxy::~FaultProxy() {
  server_->stop();
  thread_.join();
}

FaultProxy::Fault FaultProxy::Decide(const std::string& method, const std::string& target) {
  std::lock_guard<std::mutex> lock(mu_);
  if (method == "POST" && target.find("uploadId=") != std::string::npos && lose_completes_ > 0) {
    --lose_completes_;
    return Fault::kAfter;
  }
  std::uniform_real_distribution<double> u(0, 1);
  if (!fault_method_.empty() && method != fault_method_) return Fault::kNone;
  if (u(rng_) >= fault_rate_) return Fault::kNone;
  // A third of the faults hit after upstream applied the request; POST never (S3's POSTs,
  // CreateMultipartUpload and CompleteMultipartUpload, are not idempotent).
  if (method != "POST" && u(rng_) < 1.0 / 3) return Fault::kAfter;
  return Fault::kBefore;
}

}  // namespace cohort::checkpoint::testing
