// What a round's workers use besides their own launcher: the workers' store (the launchers'
// store itself, or one that the round's node rank 0 hosts when the launchers meet on etcd:
// worker_store.h) and, with --ps-servers, the parameter servers, which the node hosting the
// round's services starts and publishes for every node (with --ps-servers-per-node, every node
// starts its own and node 0 publishes the list). One per launcher, for the whole job:
// parameter servers that are all still running serve the next round too.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "collectives/store/store.h"
#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"
#include "launcher/ps_server_group.h"
#include "launcher/worker_env.h"
#include "launcher/worker_store.h"

namespace cohort::launcher {

class RoundServices {
 public:
  // launch: the launchers' store, reached by workers at launch_address; hosting: whether this
  // launcher hosts it. say: where the lines about started services go.
  RoundServices(const LaunchPlan& plan, std::shared_ptr<collectives::Store> launch,
                std::string launch_address, bool hosting,
                std::function<void(const std::string&)> say);

  // Opens round `attempt`'s services as node a.node_rank. Throws Error (WorkersStoreFailed()
  // then says which part failed).
  void Open(const Assignment& a, int attempt);

  // Whether this launcher started the round's services (it serves them until the others end).
  bool hosts() const { return hosts_; }
  // Whether the last Open failed at the workers' store (else at the parameter servers).
  bool WorkersStoreFailed() const { return !workers_.store; }
  // Whether the workers' store is one of the round's own (not the launchers').
  bool OwnWorkersStore() const { return workers_.store && workers_.store != launch_; }
  const WorkerStore& workers() const { return workers_; }
  // The environment of the round's workers.
  WorkerServices ForWorkers() const;
  // "ps-server shard 1 exited with code 1" for a parameter server this launcher started that
  // ended, else ""; never blocks.
  std::string DeadServer();

 private:
  void StartPsServers(const Assignment& a, int attempt, const std::string& advertise_host);
  void StartPsServersOnEveryNode(const Assignment& a, const std::string& key,
                                 const std::string& advertise_host);

  const LaunchPlan& plan_;
  std::shared_ptr<collectives::Store> launch_;
  std::string launch_address_;
  bool hosting_;
  std::function<void(const std::string&)> say_;
  bool hosts_ = false;
  WorkerStore workers_;
  std::unique_ptr<PsServerGroup> ps_;
  std::string ps_addresses_;
};

}  // namespace cohort::launcher
