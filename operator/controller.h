// cohort-operator's loop: leader election, then an informer of TrainingJobs (list, then watch
// from the list's resourceVersion; list again on 410 Gone; reconnect with backoff when the
// watch drops) feeding a queue of names that one worker reconciles, plus a resync that
// reconciles every known, unfinished TrainingJob each resync period (that is how the Jobs it
// owns are watched: by polling them on a short period).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <string>

#include "operator/kube_client.h"
#include "operator/leader.h"
#include "operator/reconciler.h"

namespace cohort::k8s {

struct ControllerOptions {
  std::string ns;  // TrainingJobs of this namespace; empty: all
  std::string lease_ns = "default";
  std::string lease_name = "cohort-operator";
  std::string identity;  // this replica's name (default: hostname_pid)
  int lease_duration_s = 15;
  double renew_period_s = 2;
  double resync_s = 2;
  int watch_timeout_s = 60;  // each watch request's timeoutSeconds
  double backoff_max_s = 5;  // between reconnects of a failed watch
};

class Controller {
 public:
  Controller(KubeClient& client, ControllerOptions options);

  // Runs until stop is set; leads only while it holds the Lease. Releases the Lease at the end.
  void Run(const std::atomic<bool>& stop);

 private:
  void LeaseLoop(const std::atomic<bool>& stop);
  void WatchLoop(const std::atomic<bool>& stop);
  // Lists the TrainingJobs, queues each, and returns the list's resourceVersion.
  std::string Relist();
  void Enqueue(const std::string& key);
  void OnEvent(const WatchEvent& event);
  void WorkLoop(const std::atomic<bool>& stop);

  KubeClient& client_;
  ControllerOptions options_;
  LeaderElector elector_;
  Reconciler reconciler_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::string> queue_;  // "ns/name", each at most once
  std::set<std::string> queued_;
  std::set<std::string> known_;  // TrainingJobs that exist and are not final
};

}  // namespace cohort::k8s
