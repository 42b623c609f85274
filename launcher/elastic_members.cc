#include "launcher/elastic_members.h"

#include <fmt/format.h>

#include <chrono>
#include <thread>

#include "common/error.h"
#include "common/net.h"

namespace cohort::launcher {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long a node's launcher may miss its keepalives (one every 500 ms) before the others count
// the node as lost. Long enough for a launcher starved of CPU by its own workers; a node whose
// processes die is usually noticed sooner, by its peers' collectives.
constexpr std::chrono::seconds kNodeSilenceLimit{10};

}  // namespace

ElasticMembers::ElasticMembers(const LaunchPlan& plan, std::shared_ptr<collectives::Store> store,
                               bool hosting, std::function<void(const std::string&)> say)
    : plan_(plan), store_(std::move(store)), hosting_(hosting), say_(std::move(say)) {}

std::optional<Assignment> ElasticMembers::Join(int node_id, int& round) {
  const std::string exited = fmt::format("cohort/{}/launch/exited/", plan_.run_id.value);
  const auto deadline = Clock::now() + RdzvTimeout(plan_);
  for (;;) {
    Assignment a = JoinElasticRound(*store_, plan_, round, node_id, hosting_, ids_, hosts_);
    if (a.admitted) {
      if (const std::string change = DescribeChange(ids_, hosts_, a);
          !ids_.empty() && !change.empty()) {
        say_(fmt::format("re-formed at {} nodes, a world of {}{}", a.nnodes, a.world_size, change));
      }
      ids_ = a.member_ids;
      hosts_ = a.member_hosts;
      keepalives_.emplace(RoundPrefix(plan_.run_id.value, round), a);
      return a;
    }
    // torchelastic admits a new node by restarting the group: the running nodes see this key
    // and re-form at once (see Check), rather than at a snapshot boundary that only the
    // workers know of; the workers' SIGTERM makes them save one where they stand.
    say_(
        fmt::format("rendezvous round {} is running without this node: waiting to join at the "
                    "next re-forming",
                    round));
    store_->Set(RoundPrefix(plan_.run_id.value, round) + "waiting/" + std::to_string(node_id),
                net::Hostname());
    while (CurrentRound(*store_, plan_.run_id.value) <= round) {
      if (!store_->List(exited).empty()) return std::nullopt;
      if (Clock::now() >= deadline) {
        throw cohort::Timeout(fmt::format(
            "waited {:g} s (--rdzv-timeout) to join a job that keeps running without this node; "
            "it has {} of at most {} nodes (--nnodes {}:{})",
            plan_.rdzv_timeout, a.nnodes, plan_.max_nodes.value, plan_.min_nodes.value,
            plan_.max_nodes.value));
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    round = CurrentRound(*store_, plan_.run_id.value);
  }
}

std::optional<ElasticMembers::End> ElasticMembers::Check(const std::string& prefix, int nnodes) {
  if (std::string lost = keepalives_->Check(*store_, kNodeSilenceLimit); !lost.empty()) {
    return End{true, std::move(lost)};
  }
  if (auto reform = store_->List(prefix + "reform"); !reform.empty()) {
    return End{false, reform.begin()->second};
  }
  // A node waiting to join, while there is room and no node has finished: every node re-forms.
  if (nnodes < plan_.max_nodes.value && store_->List(prefix + "done/").empty()) {
    auto waiting = store_->List(prefix + "waiting/");
    if (!waiting.empty()) {
      const std::string& key = waiting.begin()->first;
      store_->CompareSet(prefix + "reform", "",
                         fmt::format("node {} ({}) is waiting to join",
                                     key.substr(key.rfind('/') + 1), waiting.begin()->second));
    }
  }
  return std::nullopt;
}

}  // namespace cohort::launcher
