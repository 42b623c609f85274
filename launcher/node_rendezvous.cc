#include "launcher/node_rendezvous.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "common/net.h"

namespace cohort::launcher {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct NodeRecord {
  int nproc = 0;
  int min_nodes = 0;
  int max_nodes = 0;
  int hosting = 0;  // hosts the store: node rank 0 of an elastic round
  std::string host;
};

std::string Encode(const NodeRecord& r) {
  return fmt::format("{} {} {} {} {} {}", r.nproc, r.min_nodes, r.max_nodes, r.hosting, r.host,
                     ::getpid());
}

NodeRecord Decode(const std::string& s) {
  NodeRecord r;
  std::istringstream in(s);
  in >> r.nproc >> r.min_nodes >> r.max_nodes >> r.hosting >> r.host;
  std::string pid;
  if (in >> pid) r.host += " pid " + pid;
  return r;
}

// The keys a node waits on while a round forms, which a posted error sets to wake it: the
// members' arrival (Store::Arrive's "all" beside their records, which node 0 waits for) and
// node 0's table of them (which the others wait for).
std::string Arrived(const std::string& prefix) { return prefix + "node/all"; }
std::string Table(const std::string& prefix) { return prefix + "members"; }

// The nodes' records of a round by key (prefix + "node/<id>"), without the store's own keys
// beside them (Arrive's "all" and its count).
std::map<std::string, std::string> NodeRecords(collectives::Store& store,
                                               const std::string& prefix) {
  auto records = store.List(prefix + "node/");
  const size_t at = prefix.size() + 5;
  for (auto it = records.begin(); it != records.end();) {
    const std::string id = it->first.substr(at);
    const bool digits = !id.empty() && std::all_of(id.begin(), id.end(), ::isdigit);
    it = digits ? std::next(it) : records.erase(it);
  }
  return records;
}

// Fails this node, and every node still waiting, with the same error.
[[noreturn]] void FailAll(collectives::Store& store, const std::string& prefix,
                          const Error& error) {
  try {
    store.CompareSet(prefix + "error", "", error.what());
    store.Set(Arrived(prefix), "!");
    store.CompareSet(Table(prefix), "", "!");  // unless node 0 published the table first
  } catch (...) {
  }
  ThrowError(error.kind(), error.what());
}

// Throws the error another node posted, if any.
void CheckPostedError(collectives::Store& store, const std::string& prefix) {
  auto posted = store.List(prefix + "error");
  if (!posted.empty()) throw InvalidArgument(posted.begin()->second);
}

std::vector<int> Missing(collectives::Store& store, const std::string& prefix, int n) {
  auto present = NodeRecords(store, prefix);
  std::vector<int> missing;
  for (int r = 0; r < n; ++r) {
    if (!present.count(prefix + "node/" + std::to_string(r))) missing.push_back(r);
  }
  return missing;
}

std::string Shape(const NodeRecord& x) {
  return x.min_nodes == x.max_nodes ? std::to_string(x.max_nodes)
                                    : fmt::format("{}:{}", x.min_nodes, x.max_nodes);
}

// Fails every node when `other` (node other_id) expects another size of job than `mine`.
void CheckSameShape(collectives::Store& store, const std::string& prefix, int id,
                    const NodeRecord& mine, int other_id, const NodeRecord& other) {
  if (other.min_nodes == mine.min_nodes && other.max_nodes == mine.max_nodes) return;
  FailAll(store, prefix,
          InvalidArgument(fmt::format(
              "the nodes disagree on the size of the job: node {} ({}) expects {} nodes but "
              "node {} ({}) expects {}; give every launcher the same --nnodes",
              id, mine.host, Shape(mine), other_id, other.host, Shape(other))));
}

// Node 0 of a round (`mine`, id `id`, among `ids`: the members in node-rank order) reads every
// member's record, checks that they agree on the job's shape, picks MASTER_ADDR:MASTER_PORT and
// publishes the table the others read: that line, then "<id> <record>" per member. Returns the
// table as published (or an error's "!", which came first).
std::string PublishTable(collectives::Store& store, const std::string& prefix,
                         const LaunchPlan& plan, const NodeRecord& mine, int id,
                         const std::vector<int>& ids) {
  CheckPostedError(store, prefix);  // woken by an error rather than by the last arrival
  auto records = NodeRecords(store, prefix);
  // torch programs create their own store at MASTER_ADDR:MASTER_PORT: node 0 picks a free port,
  // on the endpoint's host when it hosts cohort's store, else on the address it listens on (its
  // hostname when that is every interface). MASTER_ADDR is also where the round's services on
  // node 0 are reached: the workers' store (worker_store.h) and the parameter servers.
  const NodeRecord first = Decode(records[prefix + "node/" + std::to_string(ids[0])]);
  const bool hosts_store =
      !HasRoundWorkerStore(plan) && (plan.min_nodes.value == plan.max_nodes.value || first.hosting);
  const std::string host = ids.size() == 1 ? "127.0.0.1" : ServiceHost(plan, hosts_store);
  std::string table = fmt::format("{}:{}", host, net::FreePort());
  for (int member : ids) {
    const std::string& value = records[prefix + "node/" + std::to_string(member)];
    CheckSameShape(store, prefix, id, mine, member, Decode(value));
    table += fmt::format("\n{} {}", member, value);
  }
  // The first of the table and an error's "!" wins, so every node reads the same outcome.
  return store.CompareSet(Table(prefix), "", table);
}

// The members' table of a round of n nodes 0..n-1, once every node has arrived (Store::Arrive,
// beside the nodes' records) or another node posted an error ("!" in the table's place: Assign
// throws it). Node 0 waits for the arrivals and publishes the table; every other node compares
// its shape with node 0's record (so that nodes disagreeing on the size of the job fail at once
// rather than wait for groups of different sizes) and waits for the table. O(1) store calls
// per node, where waiting for every node's key was O(n) per node: on etcd, 3 to 5 requests.
std::string AwaitNodes(collectives::Store& store, const std::string& prefix, int rank, int n,
                       const NodeRecord& mine, Clock::time_point deadline, const LaunchPlan& plan) {
  auto left = [&] {
    return std::max(milliseconds(1),
                    std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  };
  try {
    if (rank == 0) {
      store.Get(Arrived(prefix), left());  // "1" from the last arrival, or an error's "!"
      std::vector<int> ids;
      for (int r = 0; r < n; ++r) ids.push_back(r);
      return PublishTable(store, prefix, plan, mine, 0, ids);
    }
    CheckSameShape(store, prefix, rank, mine, 0, Decode(store.Get(prefix + "node/0", left())));
    return store.Get(Table(prefix), left());
  } catch (const cohort::Timeout&) {
    CheckPostedError(store, prefix);
    auto missing = Missing(store, prefix, n);
    throw cohort::Timeout(fmt::format(
        "node rank{} {} of {} never joined the rendezvous at {} within {:g} s; check that "
        "every node's launcher started and uses the same --rdzv-endpoint and --run-id",
        missing.size() == 1 ? "" : "s", fmt::join(missing, ","), n, plan.endpoint.value,
        plan.rdzv_timeout));
  }
}

// The assignment of node `id`, rank `rank` of the round's members `ids` (in node-rank order),
// from the members' table that node 0 published (PublishTable): the global ranks of its
// workers. Throws the error another node posted when the table is its "!".
Assignment Assign(collectives::Store& store, const std::string& prefix, const std::string& table,
                  int id, int rank, const std::vector<int>& ids) {
  if (table == "!") {
    CheckPostedError(store, prefix);
    throw Internal("the rendezvous was failed without an error");
  }
  std::istringstream in(table);
  std::string line;
  std::getline(in, line);
  const net::HostPort master = net::ParseHostPort(line, "MASTER_ADDR:MASTER_PORT");
  Assignment a;
  a.node_id = id;
  a.node_rank = rank;
  a.master_addr = master.host;
  a.master_port = master.port;
  a.world_size = 0;
  for (int r = 0; std::getline(in, line); ++r) {
    const auto space = line.find(' ');
    const NodeRecord rec = Decode(line.substr(space + 1));
    a.nprocs.push_back(rec.nproc);
    if (r < rank) a.first_rank += rec.nproc;
    a.world_size += rec.nproc;
    a.member_ids.push_back(std::stoi(line.substr(0, space)));
    a.member_hosts.push_back(rec.host);
  }
  a.nnodes = static_cast<int>(a.nprocs.size());
  if (a.nnodes != static_cast<int>(ids.size()) || a.member_ids[rank] != id) {
    throw Internal(
        fmt::format("node {}'s table of the round's members does not list node {} "
                    "as node rank {}: {}",
                    ids[0], id, rank, table));
  }
  a.nproc = a.nprocs[rank];
  return a;
}

// "node 1 (node1 pid 42)" for each id of `ids` that is not in `present`.
std::string NameAbsent(const std::vector<int>& ids, const std::vector<std::string>& hosts,
                       const std::vector<int>& present) {
  std::vector<std::string> names;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (std::find(present.begin(), present.end(), ids[i]) != present.end()) continue;
    names.push_back(fmt::format("node {} ({})", ids[i], i < hosts.size() ? hosts[i] : "?"));
  }
  return fmt::format("{}", fmt::join(names, ", "));
}

// The members of an elastic round, in node-rank order: the store's host first, then by id.
std::vector<int> Members(const std::map<std::string, std::string>& records,
                         const std::string& prefix) {
  std::vector<std::pair<int, int>> order;  // (not hosting, id)
  for (const auto& [key, value] : records) {
    order.push_back({Decode(value).hosting ? 0 : 1, std::stoi(key.substr(prefix.size() + 5))});
  }
  std::sort(order.begin(), order.end());
  std::vector<int> ids;
  for (const auto& o : order) ids.push_back(o.second);
  return ids;
}

// The round's first arrival closes it: at MAX nodes, or once MIN have joined and no more came
// within the last call. Returns the members; posts a Timeout for every node when fewer than MIN
// came by the deadline.
std::vector<int> CloseRound(collectives::Store& store, const std::string& prefix,
                            const LaunchPlan& plan, int round, Clock::time_point deadline,
                            const std::vector<int>& previous_ids,
                            const std::vector<std::string>& previous_hosts) {
  const int min = plan.min_nodes.value, max = plan.max_nodes.value;
  // The last round's members that said they would rejoin (Supervisor::StopForNextRound) get
  // until every node has had its grace period to stop its workers, and a little more.
  std::vector<std::string> rejoining;
  if (round > 0) {
    for (const auto& [key, host] :
         store.List(RoundPrefix(plan.run_id.value, round - 1) + "rejoin/")) {
      rejoining.push_back(prefix + "node/" + key.substr(key.rfind('/') + 1));
    }
  }
  const auto rejoin_until = Clock::now() +
                            milliseconds(static_cast<int64_t>(plan.grace_period * 1000)) +
                            std::chrono::seconds(5);
  auto last_change = Clock::now();
  size_t seen = 0;
  for (;;) {
    auto records = NodeRecords(store, prefix);
    const size_t n = records.size();
    if (n != seen) seen = n, last_change = Clock::now();
    const bool last_call_over =
        Clock::now() - last_change >= milliseconds(static_cast<int>(plan.rdzv_last_call * 1000));
    const bool rejoined =
        Clock::now() >= rejoin_until ||
        std::all_of(rejoining.begin(), rejoining.end(),
                    [&](const std::string& key) { return records.count(key) > 0; });
    if (static_cast<int>(n) >= max || (static_cast<int>(n) >= min && last_call_over && rejoined)) {
      std::vector<int> ids = Members(records, prefix);
      store.Set(prefix + "closed", fmt::format("{}", fmt::join(ids, ",")));
      return ids;
    }
    if (Clock::now() >= deadline) {
      const std::vector<int> present = Members(records, prefix);
      const std::string absent = NameAbsent(previous_ids, previous_hosts, present);
      FailAll(store, prefix,
              cohort::Timeout(fmt::format(
                  "only {} node{} joined rendezvous round {} at {} within {:g} s, and --nnodes "
                  "{}:{} needs at least {}{}",
                  n, n == 1 ? "" : "s", round, plan.endpoint.value, plan.rdzv_timeout, min, max,
                  min, absent.empty() ? "" : "; lost: " + absent + " (did not rejoin)")));
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
}

std::vector<int> AwaitClosed(collectives::Store& store, const std::string& prefix,
                             const LaunchPlan& plan, int round, Clock::time_point deadline) {
  // A little past the closer's deadline, so that its error (naming the lost nodes) arrives first.
  deadline += std::chrono::seconds(3);
  for (;;) {
    CheckPostedError(store, prefix);
    try {
      std::vector<int> ids;
      std::istringstream in(store.Get(prefix + "closed", milliseconds(250)));
      for (std::string id; std::getline(in, id, ',');) ids.push_back(std::stoi(id));
      return ids;
    } catch (const cohort::Timeout&) {
    }
    if (Clock::now() >= deadline) {
      throw cohort::Timeout(fmt::format(
          "rendezvous round {} at {} did not close within {:g} s (fewer than {} nodes joined)",
          round, plan.endpoint.value, plan.rdzv_timeout, plan.min_nodes.value));
    }
  }
}

}  // namespace

std::string RoundPrefix(const std::string& run_id, int attempt) {
  return fmt::format("cohort/{}/launch/{}/", run_id, attempt);
}

Assignment JoinNodes(collectives::Store& store, const LaunchPlan& plan, int attempt) {
  const std::string prefix = RoundPrefix(plan.run_id.value, attempt);
  const auto deadline = Clock::now() + RdzvTimeout(plan);
  NodeRecord mine{plan.nproc_per_node.value, plan.min_nodes.value, plan.max_nodes.value, 0,
                  net::Hostname()};

  int rank = plan.node_rank.value;
  if (rank < 0) rank = static_cast<int>(store.Add(prefix + "arrivals", 1)) - 1;
  if (rank >= plan.max_nodes.value) {
    throw InvalidArgument(
        fmt::format("this node arrived as number {} but the job has at most {} "
                    "nodes (--nnodes); is a launcher from another job using the "
                    "same --rdzv-endpoint and --run-id?",
                    rank + 1, plan.max_nodes.value));
  }
  // The claim of the node rank is the arrival: one call.
  const int nnodes = plan.max_nodes.value;
  if (!store.Arrive(prefix + "node/", rank, nnodes, Encode(mine))) {
    const std::string claim = store.Get(prefix + "node/" + std::to_string(rank), RdzvTimeout(plan));
    FailAll(store, prefix,
            InvalidArgument(fmt::format(
                "node rank {} is claimed twice: by {} and by {} ({}); give every node its own "
                "--node-rank (or JOB_COMPLETION_INDEX)",
                rank, Decode(claim).host, mine.host, plan.node_rank.source)));
  }
  const std::string table = AwaitNodes(store, prefix, rank, nnodes, mine, deadline, plan);

  std::vector<int> ids;
  for (int r = 0; r < nnodes; ++r) ids.push_back(r);
  Assignment a = Assign(store, prefix, table, rank, rank, ids);
  COHORT_DEBUG(kLaunch, "attempt {}: node {} of {}, ranks {}..{} of {}", attempt, rank, nnodes,
               a.first_rank, a.first_rank + a.nproc - 1, a.world_size);
  return a;
}

}  // namespace cohort::launcher

namespace cohort::launcher {

std::string CurrentRoundKey(const std::string& run_id) {
  return fmt::format("cohort/{}/launch/round", run_id);
}

int CurrentRound(collectives::Store& store, const std::string& run_id) {
  auto v = store.List(CurrentRoundKey(run_id));
  auto it = v.find(CurrentRoundKey(run_id));
  return it == v.end() ? 0 : std::stoi(it->second);
}

std::string DescribeChange(const std::vector<int>& before_ids,
                           const std::vector<std::string>& before_hosts, const Assignment& after) {
  const std::string lost = NameAbsent(before_ids, before_hosts, after.member_ids);
  const std::string joined = NameAbsent(after.member_ids, after.member_hosts, before_ids);
  return (lost.empty() ? "" : "; lost " + lost + " (did not rejoin)") +
         (joined.empty() ? "" : "; joined " + joined);
}

MemberKeepalives::MemberKeepalives(std::string prefix, const Assignment& round)
    : prefix_(std::move(prefix)), round_(round), next_(Clock::now()) {
  for (int id : round_.member_ids) {
    if (id != round_.node_id) seen_[id] = {"", Clock::now()};
  }
}

std::string MemberKeepalives::Check(collectives::Store& store, std::chrono::seconds limit) {
  const auto now = Clock::now();
  if (now >= next_) {
    store.Set(prefix_ + "alive/" + std::to_string(round_.node_id), std::to_string(++sent_));
    next_ = now + milliseconds(500);
  }
  const auto alive = store.List(prefix_ + "alive/");
  for (size_t i = 0; i < round_.member_ids.size(); ++i) {
    auto seen = seen_.find(round_.member_ids[i]);
    if (seen == seen_.end()) continue;  // this node
    auto it = alive.find(prefix_ + "alive/" + std::to_string(round_.member_ids[i]));
    if (it != alive.end() && it->second != seen->second.value) seen->second = {it->second, now};
    const double silent = std::chrono::duration<double>(now - seen->second.changed).count();
    if (silent > static_cast<double>(limit.count())) {
      return fmt::format("node {} ({}) was lost: its launcher sent no keepalive for {:.1f} s",
                         round_.member_ids[i], round_.member_hosts[i], silent);
    }
  }
  return "";
}

Assignment JoinElasticRound(collectives::Store& store, const LaunchPlan& plan, int round,
                            int node_id, bool hosting, const std::vector<int>& previous_ids,
                            const std::vector<std::string>& previous_hosts) {
  const std::string prefix = RoundPrefix(plan.run_id.value, round);
  const auto deadline = Clock::now() + RdzvTimeout(plan);
  const NodeRecord mine{plan.nproc_per_node.value, plan.min_nodes.value, plan.max_nodes.value,
                        hosting ? 1 : 0, net::Hostname()};
  if (CurrentRound(store, plan.run_id.value) < round) {
    store.Set(CurrentRoundKey(plan.run_id.value), std::to_string(round));
  }
  Assignment late;  // what a node that comes after the round closed gets
  late.node_id = node_id;
  late.admitted = false;
  // Closed already (the job runs): claim nothing, so that a node replacing a lost one under the
  // same id does not collide with the lost one's claim.
  if (auto closed = store.List(prefix + "closed"); !closed.empty()) {
    const std::string& ids = closed.begin()->second;
    late.nnodes = 1 + static_cast<int>(std::count(ids.begin(), ids.end(), ','));
    return late;
  }
  const bool closer = store.Add(prefix + "arrivals", 1) == 1;
  const std::string claim =
      store.CompareSet(prefix + "node/" + std::to_string(node_id), "", Encode(mine));
  if (claim != Encode(mine)) {
    FailAll(store, prefix,
            InvalidArgument(fmt::format(
                "node rank {} is claimed twice: by {} and by {} ({}); give every node its own "
                "--node-rank (or JOB_COMPLETION_INDEX)",
                node_id, Decode(claim).host, mine.host, plan.node_rank.source)));
  }
  const std::vector<int> ids =
      closer ? CloseRound(store, prefix, plan, round, deadline, previous_ids, previous_hosts)
             : AwaitClosed(store, prefix, plan, round, deadline);
  const auto at = std::find(ids.begin(), ids.end(), node_id);
  if (at == ids.end()) {
    late.nnodes = static_cast<int>(ids.size());
    return late;
  }
  const int rank = static_cast<int>(at - ids.begin());
  const std::string table = rank == 0 ? PublishTable(store, prefix, plan, mine, node_id, ids)
                                      : store.Get(Table(prefix), RdzvTimeout(plan));
  Assignment a = Assign(store, prefix, table, node_id, rank, ids);
  COHORT_DEBUG(kLaunch, "round {}: node {} is node rank {} of {}, ranks {}..{} of {}", round,
               node_id, a.node_rank, a.nnodes, a.first_rank, a.first_rank + a.nproc - 1,
               a.world_size);
  return a;
}

}  // namespace cohort::launcher
