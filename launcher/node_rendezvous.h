// How the launchers of a job meet: each claims its node rank on the store, they wait for one
// another (naming the nodes that never come), check that they agree on the shape of the job, and
// derive the global ranks of their workers. One round per attempt (restart).
#pragma once

#include <string>
#include <vector>

#include "collectives/store/store.h"
#include "launcher/launch_plan.h"

namespace cohort::launcher {

struct Assignment {
  int node_rank = 0;
  int nnodes = 1;
  int world_size = 1;
  int first_rank = 0;       // global rank of this node's local rank 0
  int nproc = 1;            // workers on this node
  std::vector<int> nprocs;  // workers on each node
  std::string master_addr;  // MASTER_ADDR/MASTER_PORT for torch programs' own store
  int master_port = 0;
};

// Joins round `attempt`. Throws InvalidArgument when two nodes claim one rank or the nodes
// disagree on the job's shape (and makes every other node fail with it too), Timeout naming the
// node ranks that never joined within plan.rdzv_timeout.
Assignment JoinNodes(collectives::Store& store, const LaunchPlan& plan, int attempt);

// Key prefix of a round: "cohort/<run>/launch/<attempt>/".
std::string RoundPrefix(const std::string& run_id, int attempt);

}  // namespace cohort::launcher
