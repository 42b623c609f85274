// A node's part in elastic rounds (--nnodes MIN:MAX), for the supervisor: joining a round, or
// waiting for a later one while a round runs without this node; saying who left and who came
// between rounds; and, while a round runs, this node's keepalive and what ends the round: a
// member gone silent, a re-forming another node asked for, or a node waiting to join (for which
// this node asks for one). The supervisor stops the workers; this class only decides.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "collectives/store/store.h"
#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"

namespace cohort::launcher {

class ElasticMembers {
 public:
  // store: the launchers' store; hosting: whether this launcher hosts it. say: where the lines
  // about waiting and re-forming go.
  ElasticMembers(const LaunchPlan& plan, std::shared_ptr<collectives::Store> store, bool hosting,
                 std::function<void(const std::string&)> say);

  // Joins `round` as node `node_id`, or waits for a later round and moves `round` on to the one
  // that admits it. nullopt: the job finished before a round admitted this node. Throws what
  // JoinElasticRound throws, and Timeout after --rdzv-timeout of waiting.
  std::optional<Assignment> Join(int node_id, int& round);

  // What ends the running round, from the supervisor's watch (every 100 ms) of round `prefix`
  // with `nnodes` members. lost: a member went silent (a failure of the round); else the nodes
  // re-form (not a failure).
  struct End {
    bool lost = false;
    std::string what;
  };
  std::optional<End> Check(const std::string& prefix, int nnodes);

 private:
  const LaunchPlan& plan_;
  std::shared_ptr<collectives::Store> store_;
  bool hosting_;
  std::function<void(const std::string&)> say_;
  std::vector<int> ids_;  // the last round's members, in node-rank order
  std::vector<std::string> hosts_;
  std::optional<MemberKeepalives> keepalives_;  // the running round's
};

}  // namespace cohort::launcher
