#include "launcher/node_rendezvous.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <chrono>
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
  std::string host;
};

std::string Encode(const NodeRecord& r) {
  return fmt::format("{} {} {} {} {}", r.nproc, r.min_nodes, r.max_nodes, r.host, ::getpid());
}

NodeRecord Decode(const std::string& s) {
  NodeRecord r;
  std::istringstream in(s);
  in >> r.nproc >> r.min_nodes >> r.max_nodes >> r.host;
  std::string pid;
  if (in >> pid) r.host += " pid " + pid;
  return r;
}

// Fails this node, and every node still waiting, with the same error.
[[noreturn]] void FailAll(collectives::Store& store, const std::string& prefix,
                          const Error& error) {
  try {
    store.CompareSet(prefix + "error", "", error.what());
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
  auto present = store.List(prefix + "node/");
  std::vector<int> missing;
  for (int r = 0; r < n; ++r) {
    if (!present.count(prefix + "node/" + std::to_string(r))) missing.push_back(r);
  }
  return missing;
}

// Waits until nodes 0..n-1 have joined, watching for an error posted by another node.
void AwaitNodes(collectives::Store& store, const std::string& prefix, int n,
                Clock::time_point deadline, const LaunchPlan& plan) {
  std::vector<std::string> keys;
  for (int r = 0; r < n; ++r) keys.push_back(prefix + "node/" + std::to_string(r));
  for (;;) {
    CheckPostedError(store, prefix);
    try {
      store.Wait(keys, milliseconds(250));
      return;
    } catch (const cohort::Timeout&) {
    }
    if (Clock::now() >= deadline) {
      auto missing = Missing(store, prefix, n);
      throw cohort::Timeout(fmt::format(
          "node rank{} {} of {} never joined the rendezvous at {} within {:g} s; check that "
          "every node's launcher started and uses the same --rdzv-endpoint and --run-id",
          missing.size() == 1 ? "" : "s", fmt::join(missing, ","), n, plan.endpoint.value,
          plan.rdzv_timeout));
    }
  }
}

// With --nnodes MIN:MAX the store's host closes the round: at MAX nodes, or once MIN have
// joined and no more came within the last call. Returns the round's size.
int CloseElasticRound(collectives::Store& store, const std::string& prefix, const LaunchPlan& plan,
                      Clock::time_point deadline) {
  const int min = plan.min_nodes.value, max = plan.max_nodes.value;
  if (!plan.host_store.value) {
    for (;;) {
      CheckPostedError(store, prefix);
      try {
        return std::stoi(store.Get(prefix + "closed", milliseconds(250)));
      } catch (const cohort::Timeout&) {
      }
      if (Clock::now() >= deadline) {
        throw cohort::Timeout(
            fmt::format("the rendezvous at {} did not close within {:g} s (fewer "
                        "than {} nodes joined)",
                        plan.endpoint.value, plan.rdzv_timeout, min));
      }
    }
  }
  auto last_change = Clock::now();
  size_t seen = 0;
  for (;;) {
    const size_t n = store.List(prefix + "node/").size();
    if (n != seen) seen = n, last_change = Clock::now();
    const bool last_call_over =
        Clock::now() - last_change >= milliseconds(static_cast<int>(plan.rdzv_last_call * 1000));
    if (static_cast<int>(n) >= max || (static_cast<int>(n) >= min && last_call_over)) {
      store.Set(prefix + "closed", std::to_string(n));
      return static_cast<int>(n);
    }
    if (Clock::now() >= deadline) {
      AwaitNodes(store, prefix, min, deadline, plan);  // throws, naming the missing ranks
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
}

}  // namespace

std::string RoundPrefix(const std::string& run_id, int attempt) {
  return fmt::format("cohort/{}/launch/{}/", run_id, attempt);
}

Assignment JoinNodes(collectives::Store& store, const LaunchPlan& plan, int attempt) {
  const std::string prefix = RoundPrefix(plan.run_id.value, attempt);
  const auto deadline = Clock::now() + milliseconds(static_cast<int64_t>(plan.rdzv_timeout * 1000));
  NodeRecord mine{plan.nproc_per_node.value, plan.min_nodes.value, plan.max_nodes.value,
                  net::Hostname()};

  int rank = plan.node_rank.value;
  const int arrival = static_cast<int>(store.Add(prefix + "arrivals", 1)) - 1;
  if (rank < 0) rank = arrival;
  if (rank >= plan.max_nodes.value) {
    throw InvalidArgument(
        fmt::format("this node arrived as number {} but the job has at most {} "
                    "nodes (--nnodes); is a launcher from another job using the "
                    "same --rdzv-endpoint and --run-id?",
                    rank + 1, plan.max_nodes.value));
  }
  const std::string key = prefix + "node/" + std::to_string(rank);
  const std::string claim = store.CompareSet(key, "", Encode(mine));
  if (claim != Encode(mine)) {
    FailAll(store, prefix,
            InvalidArgument(fmt::format(
                "node rank {} is claimed twice: by {} and by {} ({}); give every node its own "
                "--node-rank (or JOB_COMPLETION_INDEX)",
                rank, Decode(claim).host, mine.host, plan.node_rank.source)));
  }

  int nnodes = plan.max_nodes.value;
  if (plan.min_nodes.value != plan.max_nodes.value) {
    nnodes = CloseElasticRound(store, prefix, plan, deadline);
    if (rank >= nnodes) {
      throw InvalidArgument(
          fmt::format("node {} arrived after the rendezvous closed with {} nodes", rank, nnodes));
    }
  }
  AwaitNodes(store, prefix, nnodes, deadline, plan);

  Assignment a;
  a.node_rank = rank;
  a.nnodes = nnodes;
  a.world_size = 0;
  auto records = store.List(prefix + "node/");
  for (int r = 0; r < nnodes; ++r) {
    NodeRecord rec = Decode(records[prefix + "node/" + std::to_string(r)]);
    if (rec.min_nodes != mine.min_nodes || rec.max_nodes != mine.max_nodes) {
      auto shape = [](const NodeRecord& x) {
        return x.min_nodes == x.max_nodes ? std::to_string(x.max_nodes)
                                          : fmt::format("{}:{}", x.min_nodes, x.max_nodes);
      };
      FailAll(store, prefix,
              InvalidArgument(fmt::format(
                  "the nodes disagree on the size of the job: node {} ({}) expects {} nodes but "
                  "node {} ({}) expects {}; give every launcher the same --nnodes",
                  rank, mine.host, shape(mine), r, rec.host, shape(rec))));
    }
    a.nprocs.push_back(rec.nproc);
    if (r < rank) a.first_rank += rec.nproc;
    a.world_size += rec.nproc;
  }
  a.nproc = a.nprocs[rank];

  // torch programs create their own store at MASTER_ADDR:MASTER_PORT: node 0 picks a free port.
  if (rank == 0) {
    const net::HostPort ep = net::ParseHostPort(plan.endpoint.value, plan.endpoint.source, true);
    const std::string host = nnodes == 1 ? "127.0.0.1" : ep.host;
    store.Set(prefix + "master", fmt::format("{}:{}", host, net::FreePort()));
  }
  const net::HostPort master = net::ParseHostPort(
      store.Get(prefix + "master", milliseconds(static_cast<int64_t>(plan.rdzv_timeout * 1000))),
      "MASTER_ADDR:MASTER_PORT");
  a.master_addr = master.host;
  a.master_port = master.port;
  COHORT_DEBUG(kLaunch, "attempt {}: node {} of {}, ranks {}..{} of {}", attempt, rank, nnodes,
               a.first_rank, a.first_rank + a.nproc - 1, a.world_size);
  return a;
}

}  // namespace cohort::launcher
