#include "launcher/round_services.h"

#include <fmt/format.h>

#include <chrono>

namespace cohort::launcher {

RoundServices::RoundServices(const LaunchPlan& plan, std::shared_ptr<collectives::Store> launch,
                             std::string launch_address, bool hosting,
                             std::function<void(const std::string&)> say)
    : plan_(plan),
      launch_(std::move(launch)),
      launch_address_(std::move(launch_address)),
      hosting_(hosting),
      say_(std::move(say)) {}

void RoundServices::Open(const Assignment& a, int attempt) {
  workers_ = {};  // the last round's workers' store goes first (this node may host the next)
  if (HasRoundWorkerStore(plan_)) {
    hosts_ = a.node_rank == 0;
    workers_ = OpenWorkerStore(*launch_, plan_, a, RoundPrefix(plan_.run_id.value, attempt));
    if (hosts_)
      say_(fmt::format("the workers' store of this round listens at {}", workers_.address));
    StartPsServers(attempt, ServiceHost(plan_, false));
  } else {
    hosts_ = hosting_;
    workers_ = {launch_, launch_address_, "", "node 0"};
    StartPsServers(attempt, ServiceHost(plan_, true));
  }
}

void RoundServices::StartPsServers(int attempt, const std::string& advertise_host) {
  if (plan_.ps_servers.value == 0) return;
  const std::string key = RoundPrefix(plan_.run_id.value, attempt) + "ps-servers";
  if (hosts_ && (!ps_ || !ps_->AllRunning())) {
    ps_.reset();  // the survivors go too: workers of the new attempt get a fresh set
    ps_ = std::make_unique<PsServerGroup>(plan_.ps_servers.value, plan_.bind_host, advertise_host,
                                          plan_.token, std::chrono::seconds(30));
    say_(fmt::format("started {} ps-server{} on {}", plan_.ps_servers.value,
                     plan_.ps_servers.value == 1 ? "" : "s", ps_->Addresses()));
  }
  if (hosts_) launch_->Set(key, ps_->Addresses());
  ps_addresses_ = launch_->Get(key, RdzvTimeout(plan_));
}

WorkerServices RoundServices::ForWorkers() const {
  return {workers_.address, workers_.token, ps_addresses_};
}

std::string RoundServices::DeadServer() { return ps_ ? ps_->Dead() : ""; }

}  // namespace cohort::launcher
