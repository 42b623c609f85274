// cohort-operator: reconciles TrainingJob resources (cohort.dev/v1alpha1) into `cohort render`'s
// objects through the Kubernetes API (operator/controller.h). In a pod it reads the service
// account; elsewhere --kubeconfig or $KUBECONFIG. Deployment: operator/deploy/.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>

#include "common/error.h"
#include "operator/controller.h"
#include "operator/kube_config.h"

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cohort-operator: runs TrainingJob resources (cohort.dev/v1alpha1) as cohort jobs"};
  app.name("cohort-operator");
  std::string kubeconfig, context;
  cohort::k8s::ControllerOptions o;
  app.add_option("--kubeconfig", kubeconfig,
                 "kubeconfig file (default: $KUBECONFIG, else the pod's service account)");
  app.add_option("--context", context, "kubeconfig context (default: its current-context)");
  app.add_option("--namespace", o.ns, "watch TrainingJobs of this namespace only (default: all)");
  app.add_option("--lease-namespace", o.lease_ns, "namespace of the leader-election Lease")
      ->capture_default_str();
  app.add_option("--lease-name", o.lease_name, "name of the Lease")->capture_default_str();
  app.add_option("--identity", o.identity, "this replica's holderIdentity (default: host_pid)");
  app.add_option("--lease-duration", o.lease_duration_s, "seconds a Lease holds without renewal")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--renew-period", o.renew_period_s, "seconds between Lease renewals")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--resync", o.resync_s, "seconds between passes over every TrainingJob")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--watch-timeout", o.watch_timeout_s, "seconds each watch request lasts")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (o.renew_period_s * 2 > o.lease_duration_s) {
    std::fprintf(stderr,
                 "cohort-operator: --renew-period %.1f must be at most half of "
                 "--lease-duration %d, or the Lease runs out between renewals\n",
                 o.renew_period_s, o.lease_duration_s);
    return 2;
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  try {
    const cohort::k8s::KubeConfig config = cohort::k8s::ResolveConfig(kubeconfig, context);
    cohort::http::Options http;
    http.max_attempts = 4;
    http.connect_timeout_s = 5;
    http.stall_timeout_s = 30;
    http.cancelled = [] { return g_stop.load(); };
    cohort::k8s::KubeClient client(config, http);
    cohort::k8s::Controller controller(client, o);
    controller.Run(g_stop);
  } catch (const cohort::Error& e) {
    std::fprintf(stderr, "cohort-operator: %s\n", e.what());
    return e.kind() == cohort::ErrorKind::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
