// The workers' store of one round when the launchers meet on a store that no launcher hosts
// (etcd): the round's node rank 0 hosts a gRPC store for the workers of every node, as
// torchelastic's agent of group rank 0 hosts a TCPStore for its workers, and publishes where it
// listens, and the token that opens it, under the round's keys in the launchers' store.
//
// Why the workers stay off etcd: their traffic grows with the world (Gloo's address exchange,
// each group's join, checkpoint handshakes, a heartbeat per rank every few seconds), and etcd
// puts every write through raft and its write-ahead log: 4096 workers joining through it took
// 1.9 s here, where 512 nodes' launchers took 0.44 s on etcd and their 4096 workers 0.38 s on
// the gRPC store (bench/rendezvous_bench --variants nodes,threads,etcd).
// etcd keeps what it is for: the nodes' membership, one member per node, which survives any
// node. The workers' store lives and dies with its round: a round that loses node 0 fails, and
// the next round's node rank 0 hosts a fresh one.
#pragma once

#include <memory>
#include <string>

#include "collectives/store/store.h"
#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"

namespace cohort::launcher {

struct WorkerStore {
  std::shared_ptr<collectives::Store> store;  // this launcher's client (heartbeats)
  std::string address;                        // COHORT_STORE for the workers
  std::string token;  // COHORT_TOKEN for the workers: the plan's, else one made for the round
  std::string host;   // "node 0 (node0)", for errors
};

// The round's workers' store: node rank 0 of `a` starts it (listening on plan.bind_host, a free
// port, reached at a.master_addr) and publishes it under prefix + "workers-store" in `launch`;
// the other nodes read that (up to plan.rdzv_timeout) and connect. Throws Unavailable when node
// 0 cannot start it (it publishes why, and the others throw that) or it cannot be reached,
// Timeout when node 0 publishes nothing in time.
WorkerStore OpenWorkerStore(collectives::Store& launch, const LaunchPlan& plan, const Assignment& a,
                            const std::string& prefix);

}  // namespace cohort::launcher
