// The launcher's own Prometheus /metrics, on port COHORT_METRICS_PORT - 1 (its workers serve
// port + local rank: runtime/prometheus_sink.h), through prometheus-cpp's registry and
// common/metrics_server.h. Series (label node="<node rank>"):
//   cohort_launcher_restarts_total         group restarts so far (attempts after the first)
//   cohort_launcher_attempt                the current attempt, from 0 (COHORT_RESTART)
//   cohort_launcher_workers                workers this node runs in the current attempt
//   cohort_launcher_heartbeat_age_seconds{rank}  seconds since the launcher saw each of its
//                                          workers' heartbeats change (watched ranks only)
// No libtorch.
#pragma once

#include <memory>

namespace cohort::launcher {

class LauncherMetrics {
 public:
  // nullptr when COHORT_METRICS_PORT is unset, or (one warning naming the port and the fix) when
  // port - 1 cannot be served or cohort was built without prometheus-cpp.
  static std::unique_ptr<LauncherMetrics> FromEnv(int node);
  // Serves on host:port (0: a free one). Throws Unavailable naming the address.
  LauncherMetrics(const char* host, int port, int node);
  ~LauncherMetrics();
  LauncherMetrics(const LauncherMetrics&) = delete;
  LauncherMetrics& operator=(const LauncherMetrics&) = delete;

  // An attempt begins (0 for the first); every later one counts as a restart.
  void StartAttempt(int attempt, int workers);
  // Seconds since rank's heartbeat last changed, as the launcher sees it.
  void HeartbeatAge(int rank, double seconds);
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::launcher
