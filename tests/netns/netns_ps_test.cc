// The ps backend across namespace nodes (collectives/ps/ps_communicator.h): node 0's launcher
// starts the parameter servers, the ranks of each node reduce through their node's shared memory
// and push once per node (or, for large all-reduces, each its 1/L slice), and every rank ends
// with the exact result, bitwise the same everywhere. The workers log (COHORT_LOG_SUBSYS=coll)
// which path each communicator took.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <iterator>

#include "tests/netns/netns_launch.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

const Env kDebugColl = {{"COHORT_LOG_LEVEL", "debug"}, {"COHORT_LOG_SUBSYS", "coll"}};
const std::vector<std::string> kPsFlags = {"--nproc-per-node", "2", "--backend", "ps",
                                           "--ps-servers", "2"};

class NetnsPs : public NetnsTest {};

// Every op against its exact value: all-reduce with every reduce op, broadcast and all-gather,
// at zero, one, short and two sizes past the rails' threshold (1048583 elements, a prime: 4 MiB
// of f32, 8 MiB of i64, with a tail of count % 2 through the leaders).
TEST_F(NetnsPs, TwoNodesOfTwoReduceInsideEachNodeBeforeTheyPush) {
  NetnsCluster c(2);
  NodeLaunch job(c, kPsFlags, kDebugColl);
  auto r = job.RunAll({BinPath("collective_worker"), "--backend", "ps", "--mode", "matrix",
                       "--skip", "reducescatter,sendrecv", "--counts", "0,1,7,1031,1048583",
                       "--dtypes", "f32,i64,bf16"},
                      110s);
  for (int n = 0; n < 2; ++n) {
    ExpectRanksPassed(r[n], n, {2 * n, 2 * n + 1}, 4, "ps");
    EXPECT_EQ(CountOf(r[n].output, "ps: hierarchical: 4 ranks on 2 hosts (2,2)"), 2)
        << r[n].output;
    EXPECT_EQ(CountOf(r[n].output, "every rank pushes its own"), 0) << r[n].output;
  }
}

// Inexact sums (hier_worker.cc), 2000003 elements (rails, in several pieces): within rounding
// of the reference and bitwise equal on every rank.
TEST_F(NetnsPs, TwoNodesOfTwoEndBitwiseEqual) {
  NetnsCluster c(2);
  NodeLaunch job(c, kPsFlags, kDebugColl);
  auto r = job.RunAll(
      {BinPath("hier_worker"), "--backend", "ps", "--counts", "0,1,1031,2000003"}, 110s);
  for (int n = 0; n < 2; ++n) {
    EXPECT_EQ(r[n].exit_code, 0) << r[n].output;
    for (int rank : {2 * n, 2 * n + 1}) {
      EXPECT_NE(r[n].output.find(fmt::format(
                    "[rank {0}] rank {0}: 16 all-reduces bitwise equal on every rank, 0 wrong",
                    rank)),
                std::string::npos)
          << r[n].output;
    }
  }
}

TEST_F(NetnsPs, HierOffEveryRankPushesItsOwn) {
  NetnsCluster c(2);
  Env env = kDebugColl;
  env["COHORT_HIER"] = "0";
  NodeLaunch job(c, kPsFlags, env);
  auto r = job.RunAll({BinPath("collective_worker"), "--backend", "ps", "--mode", "matrix",
                       "--skip", "reducescatter,sendrecv", "--counts", "0,7", "--dtypes", "f32"},
                      60s);
  for (int n = 0; n < 2; ++n) {
    ExpectRanksPassed(r[n], n, {2 * n, 2 * n + 1}, 4, "ps");
    EXPECT_EQ(CountOf(r[n].output, "ps: hierarchical"), 0) << r[n].output;
    EXPECT_EQ(CountOf(r[n].output, "every rank pushes its own (COHORT_HIER=0 on rank 0)"), 2)
        << r[n].output;
  }
}

// The pid of node's `cohort ps-server --shard <shard>`, or -1.
int ServerPid(const NetnsCluster& c, int node, int shard) {
  for (int pid : c.Pids(node)) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    const std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(std::string("ps-server\0", 10)) != std::string::npos &&
        cmd.find(std::string("--shard\0", 8) + std::to_string(shard) + '\0') != std::string::npos)
      return pid;
  }
  return -1;
}

// 2 nodes x 2 ranks all-reduce 8 MiB in a loop (over the rails: every rank pushes) on servers
// that `servers` (launcher flags) start; once both have completed op 2, shard `shard`, running
// on `node`, is SIGKILLed. Both nodes must fail well within the timeout (nothing hangs in shared
// memory waiting for a peer); returns what each printed.
std::vector<ProcessResult> KillServerMidAllReduce(const std::vector<std::string>& servers, int node,
                                                  int shard) {
  NetnsCluster c(2);
  std::vector<std::string> flags = {"--nproc-per-node", "2", "--backend", "ps", "--grace-period",
                                    "2"};
  flags.insert(flags.end(), servers.begin(), servers.end());
  NodeLaunch job(c, flags);
  const std::vector<std::string> worker = {BinPath("collective_worker"), "--backend", "ps",
                                           "--mode", "hang", "--victim", "-1", "--at", "100000",
                                           "--fault-elems", "2097152"};
  auto n0 = job.Start(0, worker), n1 = job.Start(1, worker);
  EXPECT_TRUE(n0->AwaitLine("completed op 2", 60s)) << n0->Output();
  EXPECT_TRUE(n1->AwaitLine("completed op 2", 60s)) << n1->Output();
  const int server = ServerPid(c, node, shard);
  EXPECT_GT(server, 0) << n0->Output() << n1->Output();
  const auto killed = std::chrono::steady_clock::now();
  if (server > 0) ::kill(server, SIGKILL);
  std::vector<ProcessResult> r;
  r.push_back(n0->Wait(60s));
  r.push_back(n1->Wait(60s));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  const std::string all = r[0].output + r[1].output;
  for (const ProcessResult& one : r) {
    EXPECT_FALSE(one.timed_out) << all;
    EXPECT_NE(one.exit_code, 0) << all;
  }
  EXPECT_LT(secs, 20.0) << all;
  return r;
}

// Both servers on node 0, shard 1 killed: both nodes name it, node 0's launcher (which ran it)
// and node 1's (told by node 0) or its ranks.
TEST_F(NetnsPs, KilledServerFailsEveryNodeNamingIt) {
  const auto r = KillServerMidAllReduce({"--ps-servers", "2"}, 0, 1);
  EXPECT_NE(r[0].output.find("ps-server shard 1 was killed by signal 9 (SIGKILL)"),
            std::string::npos)
      << r[0].output;
  // Node 1 hears it from node 0's launcher, or its ranks lose the server first.
  EXPECT_TRUE(r[1].output.find("ps-server shard 1 was killed by signal 9") != std::string::npos ||
              r[1].output.find("(shard 1 of 2)") != std::string::npos)
      << r[1].output;
}

// --ps-servers-per-node 1: each node runs one server (node k's is shard k), node 0 publishes
// both, and every rank talks to both: the matrix passes on every rank.
TEST_F(NetnsPs, ServersOnEveryNode) {
  NetnsCluster c(2);
  NodeLaunch job(c, {"--nproc-per-node", "2", "--backend", "ps", "--ps-servers-per-node", "1"},
                 kDebugColl);
  auto r = job.RunAll({BinPath("collective_worker"), "--backend", "ps", "--mode", "matrix",
                       "--skip", "reducescatter,sendrecv", "--counts", "0,7,1048583", "--dtypes",
                       "f32,i64"},
                      110s);
  for (int n = 0; n < 2; ++n) {
    ExpectRanksPassed(r[n], n, {2 * n, 2 * n + 1}, 4, "ps");
    EXPECT_EQ(CountOf(r[n].output, fmt::format("started 1 ps-server (shard {}) on ", n)), 1)
        << r[n].output;
    EXPECT_EQ(CountOf(r[n].output, "connected to 2 servers"), 2) << r[n].output;
  }
  EXPECT_NE(r[1].output.find("started 1 ps-server (shard 1) on node1:"), std::string::npos)
      << r[1].output;
}

// One server per node, node 1's (shard 1) killed: node 1's launcher names it, node 0 fails too.
TEST_F(NetnsPs, AServerKilledOnNodeOneFailsBothNodes) {
  const auto r = KillServerMidAllReduce({"--ps-servers-per-node", "1"}, 1, 1);
  EXPECT_NE(r[1].output.find("ps-server shard 1 was killed by signal 9 (SIGKILL)"),
            std::string::npos)
      << r[1].output;
}

}  // namespace
}  // namespace cohort::testing
