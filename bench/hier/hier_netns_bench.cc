// The hierarchical all-reduce against flat Gloo TCP on 2 network-namespace nodes x 2 ranks: runs
// collectives_bench (cohort's gloo backend against the raw Gloo library, alternating, with the
// ratio per size) under one `cohort launch` per node, first with COHORT_HIER=1 (cohort's
// all-reduce is hierarchical, the raw library's is Gloo's flat ring over TCP), then with
// COHORT_HIER=0 as the control (both flat). Prints node 0's table of each run. --ops picks other
// collectives (the hierarchical ones: broadcast, allgather, reducescatter).
//   build/bin/hier_netns_bench [--ops allreduce,...] [--min-bytes N] [--max-bytes N]
//   [--rounds N] [--budget-ms N]
//   [--step-factor N] [--hier 1,0] [--backend gloo|ps] [--ps-servers N]
//   [--ps-servers-per-node N]
// --backend ps --ps-servers N: the same for the ps backend (node 0's launcher starts N servers,
// or every node its own with --ps-servers-per-node N; each node's ranks reduce through shared
// memory and push once per node with COHORT_HIER=1, every rank pushes its own with 0), against
// the same raw Gloo ring.
// Needs root (network namespaces); says why and exits 2 where they cannot be made.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "tests/netns/netns_launch.h"

namespace cohort::testing {
namespace {

int Main(int argc, char** argv) {
  std::string min_bytes = "8", max_bytes = "268435456", rounds = "3", budget = "200", step = "4";
  CLI::App app{"hierarchical vs flat Gloo all-reduce on 2 namespace nodes x 2 ranks"};
  std::string ops = "allreduce";
  app.add_option("--ops", ops,
                 "collectives_bench --ops (allreduce, broadcast, allgather, "
                 "reducescatter; comma-separated)");
  app.add_option("--min-bytes", min_bytes);
  app.add_option("--max-bytes", max_bytes);
  app.add_option("--rounds", rounds);
  app.add_option("--budget-ms", budget);
  app.add_option("--step-factor", step);
  std::vector<std::string> runs = {"1", "0"};
  app.add_option("--hier", runs, "the COHORT_HIER values to run, in order (default 1,0)")
      ->delimiter(',')
      ->check(CLI::IsMember({"0", "1"}));
  std::string backend = "gloo", ps_servers = "2";
  app.add_option("--backend", backend, "gloo (default) or ps")
      ->check(CLI::IsMember({"gloo", "ps"}));
  app.add_option("--ps-servers", ps_servers, "servers on node 0 with --backend ps (default 2)");
  std::string per_node;
  app.add_option("--ps-servers-per-node", per_node,
                 "with --backend ps: this many servers on every node instead");
  CLI11_PARSE(app, argc, argv);
  if (auto why = NetnsCluster::UnavailableReason(); !why.empty()) {
    fmt::print(stderr, "network namespaces unavailable: {}\n", why);
    return 2;
  }
  int rc = 0;
  for (const std::string& hier : runs) {
    NetnsCluster c(2);
    std::vector<std::string> flags = {"--nproc-per-node", "2"};
    if (backend == "ps") {
      flags.insert(flags.end(), {"--backend", "ps"});
      if (per_node.empty())
        flags.insert(flags.end(), {"--ps-servers", ps_servers});
      else
        flags.insert(flags.end(), {"--ps-servers-per-node", per_node});
    }
    NodeLaunch job(c, flags, {{"COHORT_HIER", hier}});
    auto r = job.RunAll({BinPath("collectives_bench"), "--backends", backend, "--ops", ops,
                         "--min-bytes", min_bytes, "--max-bytes", max_bytes, "--step-factor", step,
                         "--rounds", rounds, "--budget-ms", budget},
                        std::chrono::minutes(20));
    fmt::print("\n## COHORT_HIER={}: cohort {} {} vs raw Gloo (flat TCP ring)\n{}\n", hier,
               backend != "ps"    ? "gloo"
               : per_node.empty() ? "ps (" + ps_servers + " servers on node 0)"
                                  : "ps (" + per_node + " server(s) per node)",
               hier[0] == '1' ? "(hierarchical)" : "(flat)", r[0].output);
    for (size_t n = 0; n < r.size(); ++n) {
      if (r[n].exit_code != 0) {
        fmt::print(stderr, "node {} exited with {}:\n{}\n", n, r[n].exit_code, r[n].output);
        rc = 1;
      }
    }
  }
  return rc;
}

}  // namespace
}  // namespace cohort::testing

int main(int argc, char** argv) { return cohort::testing::Main(argc, argv); }
