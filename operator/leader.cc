#include "operator/leader.h"

#include <fmt/format.h>

#include <ctime>

#include "common/error.h"
#include "common/log.h"
#include "common/utc_time.h"

namespace cohort::k8s {

LeaseStep DecideLease(const Json& lease, const std::string& me, double unchanged_s) {
  if (lease.is_null()) return LeaseStep::kCreate;
  const Json& spec = lease.contains("spec") ? lease["spec"] : Json::object();
  const std::string holder = spec.value("holderIdentity", "");
  if (holder == me) return LeaseStep::kRenew;
  if (holder.empty()) return LeaseStep::kTakeOver;  // released
  const int duration = spec.value("leaseDurationSeconds", 15);
  return unchanged_s >= duration ? LeaseStep::kTakeOver : LeaseStep::kWait;
}

Json LeaseFor(LeaseStep step, const Json& lease, const std::string& ns, const std::string& name,
              const std::string& me, int duration_s, const std::string& now_micro) {
  Json out = lease.is_null() ? Json{{"apiVersion", "coordination.k8s.io/v1"},
                                    {"kind", "Lease"},
                                    {"metadata", {{"name", name}, {"namespace", ns}}},
                                    {"spec", Json::object()}}
                             : lease;
  Json& spec = out["spec"];
  if (step != LeaseStep::kRenew) {
    spec["acquireTime"] = now_micro;
    spec["leaseTransitions"] =
        step == LeaseStep::kCreate ? 0 : spec.value("leaseTransitions", 0) + 1;
  }
  spec["holderIdentity"] = me;
  spec["leaseDurationSeconds"] = duration_s;
  spec["renewTime"] = now_micro;
  return out;
}

LeaderElector::LeaderElector(KubeClient& client, std::string ns, std::string name,
                             std::string identity, int duration_s)
    : client_(client),
      ns_(std::move(ns)),
      name_(std::move(name)),
      identity_(std::move(identity)),
      duration_s_(duration_s) {}

bool LeaderElector::TryOnce() {
  const std::string path = ResourcePath(kLeases, ns_, name_);
  const ApiResult got = client_.Get(path);
  if (!got.ok() && got.status != 404)
    throw Unavailable("the API server refused to read Lease " + ns_ + "/" + name_ + ": " +
                      got.Message());
  const Json lease = got.ok() ? got.body : Json();
  const auto now = Clock::now();
  std::string record;
  if (!lease.is_null())
    record = lease["spec"].value("holderIdentity", "") + " " + lease["spec"].value("renewTime", "");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (record != seen_record_ || seen_since_ == Clock::time_point{}) {
      seen_record_ = record;
      seen_since_ = now;
    }
  }
  const double unchanged = std::chrono::duration<double>(now - seen_since_).count();
  const LeaseStep step = DecideLease(lease, identity_, unchanged);
  if (step == LeaseStep::kWait) {
    std::lock_guard<std::mutex> lock(mu_);
    holding_ = false;
    return false;
  }
  const Json body =
      LeaseFor(step, lease, ns_, name_, identity_, duration_s_, UtcNowRfc3339Micros());
  const ApiResult wrote = step == LeaseStep::kCreate
                              ? client_.Create(ResourcePath(kLeases, ns_), body)
                              : client_.Update(path, body);
  std::lock_guard<std::mutex> lock(mu_);
  if (wrote.status == 409) {  // another candidate wrote first: it leads
    holding_ = false;
    return false;
  }
  if (!wrote.ok())
    throw Unavailable("the API server refused to write Lease " + ns_ + "/" + name_ + ": " +
                      wrote.Message());
  if (!holding_ || step != LeaseStep::kRenew)
    COHORT_INFO(kOperator, "{} is the leader (Lease {}/{})", identity_, ns_, name_);
  holding_ = true;
  renewed_at_ = now;
  return true;
}

bool LeaderElector::IsLeader() const {
  std::lock_guard<std::mutex> lock(mu_);
  return holding_ && Clock::now() - renewed_at_ < std::chrono::seconds(duration_s_);
}

void LeaderElector::Release() {
  if (!IsLeader()) return;
  const std::string path = ResourcePath(kLeases, ns_, name_);
  const ApiResult got = client_.Get(path);
  if (!got.ok() || got.body["spec"].value("holderIdentity", "") != identity_) return;
  Json lease = got.body;
  lease["spec"]["holderIdentity"] = "";
  client_.Update(path, lease);
  std::lock_guard<std::mutex> lock(mu_);
  holding_ = false;
}

}  // namespace cohort::k8s
