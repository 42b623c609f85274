#include "launcher/launcher_metrics.h"

#include <map>
#include <mutex>
#include <string>

#include "common/env.h"
#include "common/error.h"
#include "common/log.h"

#ifdef COHORT_HAVE_PROMETHEUS
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "common/metrics_server.h"
#endif

namespace cohort::launcher {

#ifdef COHORT_HAVE_PROMETHEUS
struct LauncherMetrics::Impl {
  std::string node;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Counter* restarts = nullptr;
  prometheus::Gauge* attempt = nullptr;
  prometheus::Gauge* workers = nullptr;
  prometheus::Family<prometheus::Gauge>* ages = nullptr;
  std::mutex mu;  // guards last_attempt and age_gauges
  int last_attempt = 0;
  std::map<int, prometheus::Gauge*> age_gauges;
  std::unique_ptr<MetricsServer> server;
};

LauncherMetrics::LauncherMetrics(const char* host, int port, int node)
    : impl_(std::make_unique<Impl>()) {
  Impl& i = *impl_;
  i.node = std::to_string(node);
  const prometheus::Labels labels = {{"node", i.node}};
  i.restarts = &prometheus::BuildCounter()
                    .Name("cohort_launcher_restarts_total")
                    .Help("Group restarts so far (attempts after the first)")
                    .Register(*i.registry)
                    .Add(labels);
  i.attempt = &prometheus::BuildGauge()
                   .Name("cohort_launcher_attempt")
                   .Help("Current attempt, from 0 (the workers' COHORT_RESTART)")
                   .Register(*i.registry)
                   .Add(labels);
  i.workers = &prometheus::BuildGauge()
                   .Name("cohort_launcher_workers")
                   .Help("Workers this node runs in the current attempt")
                   .Register(*i.registry)
                   .Add(labels);
  i.ages = &prometheus::BuildGauge()
                .Name("cohort_launcher_heartbeat_age_seconds")
                .Help("Seconds since the launcher saw the rank's heartbeat change")
                .Register(*i.registry);
  i.server = std::make_unique<MetricsServer>(host, port);  // throws Unavailable
  i.server->Register(i.registry);
}

void LauncherMetrics::StartAttempt(int attempt, int workers) {
  Impl& i = *impl_;
  std::lock_guard<std::mutex> lock(i.mu);
  if (attempt > i.last_attempt) i.restarts->Increment(attempt - i.last_attempt);
  i.last_attempt = attempt;
  i.attempt->Set(attempt);
  i.workers->Set(workers);
}

void LauncherMetrics::HeartbeatAge(int rank, double seconds) {
  Impl& i = *impl_;
  std::lock_guard<std::mutex> lock(i.mu);
  prometheus::Gauge*& g = i.age_gauges[rank];
  if (!g) g = &i.ages->Add({{"node", i.node}, {"rank", std::to_string(rank)}});
  g->Set(seconds);
}

int LauncherMetrics::port() const { return impl_->server->port(); }

#else  // built without prometheus-cpp

struct LauncherMetrics::Impl {};
LauncherMetrics::LauncherMetrics(const char* host, int port, int) {
  throw Unavailable(std::string("cannot serve Prometheus metrics on ") + host + ":" +
                    std::to_string(port) +
                    ": cohort was built without prometheus-cpp; run scripts/setup and reconfigure");
}
void LauncherMetrics::StartAttempt(int, int) {}
void LauncherMetrics::HeartbeatAge(int, double) {}
int LauncherMetrics::port() const { return 0; }

#endif

LauncherMetrics::~LauncherMetrics() = default;

std::unique_ptr<LauncherMetrics> LauncherMetrics::FromEnv(int node) {
  if (!env::kMetricsPort.IsSet()) return nullptr;
  const int64_t port = env::kMetricsPort.Int(0) - 1;
  if (port < 1 || port > 65534) {
    COHORT_WARN(kLaunch,
                "COHORT_METRICS_PORT={} leaves no port below it for the launcher's "
                "metrics; set it to e.g. 9400",
                port + 1);
    return nullptr;
  }
  try {
    auto m = std::make_unique<LauncherMetrics>("0.0.0.0", static_cast<int>(port), node);
    COHORT_INFO(kLaunch, "metrics: the launcher's Prometheus /metrics on port {}", port);
    return m;
  } catch (const Unavailable& e) {
    COHORT_WARN(kLaunch, "{}; the job goes on without the launcher's metrics", e.what());
    return nullptr;
  }
}

}  // namespace cohort::launcher
