// An HTTP proxy for S3 fault tests: forwards every request to an upstream server (moto) unchanged
// - method, raw target, headers including Host, body - so SigV4 signatures made for the proxy's
// address still verify upstream, and answers a seeded share of requests with 500 or 503
// instead. Some faults are injected after the upstream already applied the request (the answer
// is "lost"), but never for POST, whose retries are not idempotent for S3 either.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace cohort::checkpoint::testing {

class FaultProxy {
 public:
  // fault_rate: share of requests answered 500/503, in [0, 1].
  FaultProxy(std::string upstream_host, int upstream_port, double fault_rate, uint64_t seed);
  ~FaultProxy();

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void set_fault_rate(double rate) { fault_rate_ = rate; }
  // Only requests with this method get random faults ("" = all methods).
  void set_fault_method(const std::string& method) {
    std::lock_guard<std::mutex> lock(mu_);
    fault_method_ = method;
  }
  // The next n CompleteMultipartUpload requests reach upstream (which completes the object),
  // but their answers are replaced by a 500: the client retries a completed upload.
  void LoseCompleteAnswers(int n) { lose_completes_ = n; }
  int requests() const { return requests_; }
  int faults() const { return faults_; }
  // The most requests that were in flight at once.
  int max_concurrent() const { return max_concurrent_; }

 private:
  enum class Fault { kNone, kBefore, kAfter };
  Fault Decide(const std::string& method, const std::string& target);

  std::string upstream_host_;
  int upstream_port_;
  std::atomic<double> fault_rate_;
  std::mutex mu_;
  std::mt19937_64 rng_;
  std::string fault_method_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> requests_{0}, faults_{0}, in_flight_{0}, max_concurrent_{0};
  std::atomic<int> lose_completes_{0};
};

}  // namespace cohort::checkpoint::testing
