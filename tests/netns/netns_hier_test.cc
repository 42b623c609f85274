// Hierarchical all-reduce (collectives/hier/) across namespace nodes: the ranks of each node
// reduce through their node's shared memory, one leader per node all-reduces over TCP between
// nodes, and every rank ends with the same result. The workers log (COHORT_LOG_SUBSYS=gloo) which
// all-reduce path each communicator took, which proves the hierarchical one ran.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>

#include "tests/netns/netns_launch.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

// The matrix checks every op's result against its exact value (expected_values.h): all-reduce
// with every reduce op, in and out of place, at zero, one, short, two-message and a large prime
// count (65537 elements: past the shared-memory one-step limit and several of its pieces).
const std::vector<std::string> kHierMatrix = {
    BinPath("collective_worker"), "--backend", "gloo",        "--mode", "matrix", "--counts",
    "0,1,7,1031,65537",           "--dtypes",  "f32,i64,bf16"};

const Env kDebugGloo = {{"COHORT_LOG_LEVEL", "debug"}, {"COHORT_LOG_SUBSYS", "gloo"}};

class NetnsHier : public NetnsTest {};

TEST_F(NetnsHier, TwoNodesOfTwoAllReduceHierarchically) {
  NetnsCluster c(2);
  NodeLaunch job(c, {"--nproc-per-node", "2"}, kDebugGloo);
  auto r = job.RunAll(kHierMatrix, 100s);
  for (int n = 0; n < 2; ++n) {
    ExpectRanksPassed(r[n], n, {2 * n, 2 * n + 1}, 4, "gloo");
    // Both ranks of the node took the hierarchical path.
    EXPECT_EQ(CountOf(r[n].output, "all-reduce hierarchical: 4 ranks on 2 hosts (2,2)"), 2)
        << r[n].output;
  }
}

// Hosts of 2, 1 and 2 ranks: node 1's one rank is its own leader and skips shared memory.
TEST_F(NetnsHier, ThreeNodesOfTwoOneTwoAllReduceHierarchically) {
  NetnsCluster c(3);
  NodeLaunch two(c, {"--nproc-per-node", "2"}, kDebugGloo);
  NodeLaunch one(c, {"--nproc-per-node", "1"}, kDebugGloo);
  auto n0 = two.Start(0, kHierMatrix), n1 = one.Start(1, kHierMatrix),
       n2 = two.Start(2, kHierMatrix);
  auto r0 = n0->Wait(100s), r1 = n1->Wait(100s), r2 = n2->Wait(100s);
  const std::string path = "all-reduce hierarchical: 5 ranks on 3 hosts (2,1,2)";
  ExpectRanksPassed(r0, 0, {0, 1}, 5, "gloo");
  ExpectRanksPassed(r1, 1, {2}, 5, "gloo");
  ExpectRanksPassed(r2, 2, {3, 4}, 5, "gloo");
  EXPECT_EQ(CountOf(r0.output, path), 2) << r0.output;
  EXPECT_EQ(CountOf(r1.output, path), 1) << r1.output;
  EXPECT_EQ(CountOf(r2.output, path), 2) << r2.output;
}

// Inexact sums (hier_worker.cc): every rank's result within rounding of the reference and
// bitwise equal to every other rank's, on 2 x 2 ranks and on hosts of 2, 1 and 2 ranks. 2000003
// elements (a prime) take 1 (f32) and 2 (f64) of the pipeline's pieces (kPieceBytes, 8 MiB).
void ExpectBitwiseEqual(const std::vector<int>& per_node) {
  NetnsCluster c(static_cast<int>(per_node.size()));
  const std::vector<std::string> worker = {BinPath("hier_worker"), "--counts", "0,1,1031,2000003"};
  std::vector<std::unique_ptr<Subprocess>> nodes;
  std::vector<std::unique_ptr<NodeLaunch>> jobs;
  for (size_t n = 0; n < per_node.size(); ++n) {
    jobs.push_back(std::make_unique<NodeLaunch>(
        c, std::vector<std::string>{"--nproc-per-node", std::to_string(per_node[n])}, kDebugGloo));
    nodes.push_back(jobs.back()->Start(static_cast<int>(n), worker));
  }
  int rank = 0;
  for (size_t n = 0; n < per_node.size(); ++n) {
    auto r = nodes[n]->Wait(100s);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(CountOf(r.output, "all-reduce hierarchical: "), per_node[n]) << r.output;
    for (int l = 0; l < per_node[n]; ++l, ++rank) {
      EXPECT_NE(
          r.output.find(fmt::format(
              "[rank {0}] rank {0}: 16 all-reduces bitwise equal on every rank, 0 wrong", rank)),
          std::string::npos)
          << r.output;
    }
  }
}

TEST_F(NetnsHier, TwoNodesOfTwoEndBitwiseEqual) { ExpectBitwiseEqual({2, 2}); }

TEST_F(NetnsHier, HostsOfTwoOneTwoEndBitwiseEqual) { ExpectBitwiseEqual({2, 1, 2}); }

TEST_F(NetnsHier, HierOffRunsFlatOverTcp) {
  NetnsCluster c(2);
  Env env = kDebugGloo;
  env["COHORT_HIER"] = "0";
  NodeLaunch job(c, {"--nproc-per-node", "2"}, env);
  auto r = job.RunAll({BinPath("collective_worker"), "--backend", "gloo", "--mode", "matrix",
                       "--counts", "0,7", "--dtypes", "f32"},
                      60s);
  for (int n = 0; n < 2; ++n) {
    ExpectRanksPassed(r[n], n, {2 * n, 2 * n + 1}, 4, "gloo");
    EXPECT_EQ(CountOf(r[n].output, "all-reduce hierarchical"), 0) << r[n].output;
    EXPECT_EQ(CountOf(r[n].output, "; not hierarchical: COHORT_HIER=0 on rank 0)"), 2)
        << r[n].output;
  }
}

// 2 nodes x 2 gloo workers where rank 3 misbehaves (`mode`: kill or hang) at op 5: both nodes
// must fail, not time out, within 30 s. Returns what each node printed, and fills all (both
// outputs) and took (seconds).
std::vector<ProcessResult> RunWithBadRankThree(const std::string& mode, const std::string& timeout,
                                               std::string* all, double* took) {
  NetnsCluster c(2);
  NodeLaunch job(c, {"--nproc-per-node", "2", "--grace-period", "2"},
                 {{"COHORT_TIMEOUT", timeout}});
  const auto t0 = std::chrono::steady_clock::now();
  auto r = job.RunAll({BinPath("collective_worker"), "--backend", "gloo", "--mode", mode,
                       "--victim", "3", "--at", "5"},
                      60s);
  *took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  *all = r[0].output + r[1].output;
  for (int n = 0; n < 2; ++n) {
    EXPECT_FALSE(r[n].timed_out) << *all;
    EXPECT_NE(r[n].exit_code, 0) << *all;
  }
  EXPECT_LT(*took, 30) << *all;
  return r;
}

// Rank 3 (node 1's second rank, not a leader) SIGKILLs itself inside an all-reduce of 4 MiB.
// Node 1's launcher names it and stops its leader; node 0's ranks fail too, within the collective
// timeout (8 s), naming rank 3 or relaying node 1's failure, and nothing hangs.
TEST_F(NetnsHier, KilledRankMidAllReduceIsNamed) {
  std::string all;
  double took = 0;
  const auto r = RunWithBadRankThree("kill", "8", &all, &took);
  EXPECT_NE(r[1].output.find("rank 3 on node 1 was killed by signal 9"), std::string::npos) << all;
  const bool named = r[0].output.find("rank 3") != std::string::npos ||
                     r[0].output.find("on node 1 exited with code") != std::string::npos;
  EXPECT_TRUE(named) << all;
  fmt::print("both nodes failed {:.1f} s after the start\n", took);
}

// Rank 3 stops calling collectives at op 5 (hangs, alive): its leader, rank 2, waits for it in
// shared memory and names it, as a rank of the world, at the collective timeout (4 s); node 0's
// ranks fail too, and nothing hangs. Node 0's ranks reach their own timeout at about the same
// moment and name rank 3 through the health verdict, unless node 1's failure reaches node 0's
// launcher first (it polls every 100 ms) and it stops them: then node 0 relays that failure.
TEST_F(NetnsHier, HungLocalRankIsNamedAtTheTimeout) {
  std::string all;
  double took = 0;
  const auto r = RunWithBadRankThree("hang", "4", &all, &took);
  EXPECT_NE(r[1].output.find("rank 3 (local rank 1 of this host) did not arrive in time"),
            std::string::npos)
      << all;
  const bool named = r[0].output.find("rank 3") != std::string::npos ||
                     r[0].output.find("on node 1 exited with code") != std::string::npos;
  EXPECT_TRUE(named) << all;
  fmt::print("both nodes failed {:.1f} s after the start\n", took);
  for (int n = 0; n < 2; ++n) {  // what each node said first
    const size_t at = r[n].output.find("ERROR");
    if (at != std::string::npos) {
      fmt::print("node {}: {}\n", n, r[n].output.substr(at, r[n].output.find('\n', at) - at));
    }
  }
}

}  // namespace
}  // namespace cohort::testing
