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
    StartPsServers(a, attempt, ServiceHost(plan_, false));
  } else {
    hosts_ = hosting_;
    workers_ = {launch_, launch_address_, "", "node 0"};
    StartPsServers(a, attempt, ServiceHost(plan_, hosts_));
  }
}

void RoundServices::StartPsServers(const Assignment& a, int attempt,
                                   const std::string& advertise_host) {
  const std::string key = RoundPrefix(plan_.run_id.value, attempt) + "ps-servers";
  if (plan_.ps_servers_per_node.value > 0) return StartPsServersOnEveryNode(a, key, advertise_host);
  if (plan_.ps_servers.value == 0) return;
  if (hosts_ && (!ps_ || !ps_->AllRunning())) {
    ps_.reset();  // the survivors go too: workers of the new attempt get a fresh set
    ps_ = std::make_unique<PsServerGroup>(0, plan_.ps_servers.value, plan_.ps_servers.value,
                                          plan_.bind_host, advertise_host, plan_.token,
                                          std::chrono::seconds(30));
    say_(fmt::format("started {} ps-server{} on {}", plan_.ps_servers.value,
                     plan_.ps_servers.value == 1 ? "" : "s", ps_->Addresses()));
  }
  if (hosts_) launch_->Set(key, ps_->Addresses());
  ps_addresses_ = launch_->Get(key, RdzvTimeout(plan_));
}

// Node k runs shards k*N .. k*N+N-1 of nnodes*N; node 0 joins every node's list in node-rank
// order (O(nnodes) store calls on node 0, O(1) on the others).
void RoundServices::StartPsServersOnEveryNode(const Assignment& a, const std::string& key,
                                              const std::string& advertise_host) {
  const int n = plan_.ps_servers_per_node.value, first = a.node_rank * n;
  ps_.reset();  // a fresh set every round: the shards are numbered by this round's node ranks
  ps_ = std::make_unique<PsServerGroup>(first, n, a.nnodes * n, plan_.bind_host, advertise_host,
                                        plan_.token, std::chrono::seconds(30));
  const std::string shards =
      n == 1 ? fmt::format("shard {}", first) : fmt::format("shards {}-{}", first, first + n - 1);
  say_(fmt::format("started {} ps-server{} ({}) on {}", n, n == 1 ? "" : "s", shards,
                   ps_->Addresses()));
  launch_->Set(fmt::format("{}/{}", key, a.node_rank), ps_->Addresses());
  if (a.node_rank == 0) {
    std::vector<std::string> keys;
    for (int i = 0; i < a.nnodes; ++i) keys.push_back(fmt::format("{}/{}", key, i));
    launch_->Wait(keys, RdzvTimeout(plan_));
    std::string all;
    for (const std::string& k : keys) {
      all += (all.empty() ? "" : ",") + launch_->Get(k, RdzvTimeout(plan_));
    }
    launch_->Set(key, all);
  }
  ps_addresses_ = launch_->Get(key, RdzvTimeout(plan_));
}

WorkerServices RoundServices::ForWorkers() const {
  return {workers_.address, workers_.token, ps_addresses_};
}

std::string RoundServices::DeadServer() { return ps_ ? ps_->Dead() : ""; }

}  // namespace cohort::launcher
