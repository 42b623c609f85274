// How the launchers of a job meet: each claims its node rank on the store, they wait for one
// another (naming the nodes that never come), check that they agree on the shape of the job, and
// derive the global ranks of their workers. One round per attempt (restart).
//
// With --nnodes MIN:MAX the rounds are elastic (JoinElasticRound): a node keeps one id for the
// whole job (its --node-rank, or an id by order of first arrival) and each round's members get
// node ranks 0..n-1 in order of id, the store's host first. Any round's first arrival closes it
// (at MAX, or once MIN came and --rdzv-last-call passed), so a round needs no particular node
// unless the store lives in one (then every node fails when it goes). Round numbers only grow:
// each restart or re-forming has its own keys, and "cohort/<run>/launch/round" names the
// newest, which is where a launcher that starts while the job runs looks first.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "collectives/store/store.h"
#include "launcher/launch_plan.h"

namespace cohort::launcher {

struct Assignment {
  int node_id = 0;    // the node's id for the whole job (== node_rank unless elastic)
  int node_rank = 0;  // its rank in this round
  int nnodes = 1;
  int world_size = 1;
  int first_rank = 0;       // global rank of this node's local rank 0
  int nproc = 1;            // workers on this node
  std::vector<int> nprocs;  // workers on each node
  std::string master_addr;  // MASTER_ADDR/MASTER_PORT for torch programs' own store
  int master_port = 0;
  // Elastic rounds only: each member's id and "hostname pid N", in node-rank order.
  std::vector<int> member_ids;
  std::vector<std::string> member_hosts;
  bool admitted = true;  // false: the round closed without this node (it waits for the next)
};

// Joins round `attempt`. Throws InvalidArgument when two nodes claim one rank or the nodes
// disagree on the job's shape (and makes every other node fail with it too), Timeout naming the
// node ranks that never joined within plan.rdzv_timeout.
Assignment JoinNodes(collectives::Store& store, const LaunchPlan& plan, int attempt);

// Joins elastic round `round` as node `node_id`; `hosting` says whether this launcher hosts the
// store. previous_ids/previous_hosts: the last round's members, named when too few come back.
// Returns admitted=false when the round closed without this node. Throws InvalidArgument for a
// claimed id or disagreeing shapes, Timeout when fewer than MIN nodes came within
// plan.rdzv_timeout (naming the previous round's members that did not rejoin).
Assignment JoinElasticRound(collectives::Store& store, const LaunchPlan& plan, int round,
                            int node_id, bool hosting, const std::vector<int>& previous_ids,
                            const std::vector<std::string>& previous_hosts);

// "; lost node 1 (node1 pid 7) (did not rejoin); joined node 3 (...)": who left and who came
// between an elastic round with members before_ids/before_hosts and `after`; "" if nobody.
std::string DescribeChange(const std::vector<int>& before_ids,
                           const std::vector<std::string>& before_hosts, const Assignment& after);

// This node's keepalive in an elastic round, and the other members' as this node sees them.
class MemberKeepalives {
 public:
  // prefix: the round's (RoundPrefix). Every other member counts as just heard from.
  MemberKeepalives(std::string prefix, const Assignment& round);
  // Sends this node's keepalive when 500 ms have passed since the last one; returns "node 1
  // (node1 pid 7) was lost: ..." for a member silent for longer than `limit`, else "".
  std::string Check(collectives::Store& store, std::chrono::seconds limit);

 private:
  struct Seen {
    std::string value;
    std::chrono::steady_clock::time_point changed;
  };
  std::string prefix_;
  Assignment round_;
  std::map<int, Seen> seen_;  // by member id, this node's excepted
  int64_t sent_ = 0;
  std::chrono::steady_clock::time_point next_;
};

// The newest elastic round number (0 before any), and the key that holds it.
std::string CurrentRoundKey(const std::string& run_id);
int CurrentRound(collectives::Store& store, const std::string& run_id);

// Key prefix of a round: "cohort/<run>/launch/<attempt>/".
std::string RoundPrefix(const std::string& run_id, int attempt);

}  // namespace cohort::launcher
