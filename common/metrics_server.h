// MetricsServer: serves Prometheus collectables (prometheus-cpp's Registry, or a Collectable
// that reads counters at scrape time) at GET /metrics in Prometheus's text format, serialized by
// prometheus-cpp's TextSerializer. The HTTP side is cpp-httplib rather than prometheus-cpp's
// Exposer: the Exposer's civetweb (Debian's libcivetweb 1.15) starts its threads with a fixed
// 100 KiB stack, and in a process with libtorch loaded the static TLS of its libraries
// (OpenBLAS, glog, NCCL, CUDA runtime: about 160 KiB) does not fit, so pthread_create fails with
// EINVAL and the Exposer throws "null context when constructing CivetServer". No libtorch.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}
namespace prometheus {
class Collectable;
}

namespace cohort {

class MetricsServer {
 public:
  // Binds host:port (port 0: a free one) and serves in a background thread. Throws Unavailable
  // naming the address and the fix when it cannot be bound.
  MetricsServer(const std::string& host, int port);
  // Stops serving and joins the thread.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Adds what each scrape collects; expired collectables are skipped. Thread-safe.
  void Register(std::weak_ptr<prometheus::Collectable> collectable);
  // The bound port.
  int port() const { return port_; }

 private:
  std::string Scrape();

  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables_;
};

}  // namespace cohort
