// Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection does:
// the holder renews renewTime every renew period; a candidate takes the Lease over only after
// it has seen the same record unchanged for leaseDurationSeconds by its own clock (no clock
// comparison between machines); every write carries the resourceVersion it read, so of two
// candidates only one write wins (the other gets 409 and waits). A holder counts itself leader
// only until leaseDurationSeconds after its last successful renewal, so two replicas never both
// act, even when one is cut off from the API server.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include "operator/kube_client.h"

namespace cohort::k8s {

enum class LeaseStep { kCreate, kRenew, kTakeOver, kWait };

// What a candidate `me` does with the Lease it read (null: there is none), which it has seen
// unchanged for unchanged_s seconds.
LeaseStep DecideLease(const Json& lease, const std::string& me, double unchanged_s);

// The Lease to write for `step` (kCreate, kRenew or kTakeOver), from the one read (null for
// kCreate): holderIdentity me, leaseDurationSeconds, renewTime now (and acquireTime and
// leaseTransitions + 1 when the holder changes), keeping the read resourceVersion.
Json LeaseFor(LeaseStep step, const Json& lease, const std::string& ns, const std::string& name,
              const std::string& me, int duration_s, const std::string& now_micro);

class LeaderElector {
 public:
  LeaderElector(KubeClient& client, std::string ns, std::string name, std::string identity,
                int duration_s);

  // One round: read the Lease, then create, renew or take it over, or wait. Returns whether
  // this replica holds it now. Throws Unavailable when the API server cannot be reached (the
  // caller retries; IsLeader() runs out on its own).
  bool TryOnce();
  // True until duration_s after the last successful write of our own record.
  bool IsLeader() const;
  // Gives the Lease up (holderIdentity cleared) when we hold it, so a successor need not wait.
  void Release();
  const std::string& identity() const { return identity_; }

 private:
  using Clock = std::chrono::steady_clock;
  KubeClient& client_;
  std::string ns_, name_, identity_;
  int duration_s_;
  mutable std::mutex mu_;
  std::string seen_record_;  // holder + renewTime last read
  Clock::time_point seen_since_{};
  Clock::time_point renewed_at_{};
  bool holding_ = false;
};

}  // namespace cohort::k8s
