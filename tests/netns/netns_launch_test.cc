// `cohort launch` across nodes that are network namespaces (tests/util/netns.h): one launcher per
// node, reaching node 0 by its address, Gloo between the nodes over veth and a bridge.
#include "tests/netns/netns_launch.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "collectives/store/etcd_api.h"
#include "common/base64.h"
#include "tests/collectives/store/etcd_fixture.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

bool Has(const ProcessResult& r, const std::string& text) {
  return r.output.find(text) != std::string::npos;
}

class NetnsLaunch : public NetnsTest {};

TEST_F(NetnsLaunch, TwoNodesOfTwoWorkersAllReduceCorrectly) {
  NetnsCluster c(2);
  NodeLaunch job(c, {"--nproc-per-node", "2"});
  auto r = job.RunAll(kMatrix, 60s);
  ExpectMatrixPassed(r, 4);
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(CountOf(r[rank / 2].output, fmt::format("rank {} of 4 (gloo): ", rank)), 1);
  }
}

TEST_F(NetnsLaunch, ThreeNodesOfTwoWorkersAllReduceCorrectly) {
  NetnsCluster c(3);
  NodeLaunch job(c, {"--nproc-per-node", "2"});
  auto r = job.RunAll(kMatrix, 60s);
  ExpectMatrixPassed(r, 6);
  EXPECT_NE(r[2].output.find("started 2 workers (ranks 4..5) of a world of 6"), std::string::npos)
      << r[2].output;
}

TEST_F(NetnsLaunch, NodeThatNeverArrivesIsNamedAtTheDeadline) {
  NetnsCluster c(3);
  NodeLaunch job(c, {"--nproc-per-node", "2", "--rdzv-timeout", "3"});
  auto n0 = job.Start(0, kMatrix), n1 = job.Start(1, kMatrix);  // node 2 never comes
  auto r0 = n0->Wait(30s), r1 = n1->Wait(30s);
  for (const auto* r : {&r0, &r1}) {
    EXPECT_EQ(r->exit_code, 3) << r->output;
    EXPECT_NE(r->output.find("node rank 2 of 3 never joined the rendezvous at 10.77.0.1:"),
              std::string::npos)
        << r->output;
    EXPECT_LT(r->seconds, 10) << r->output;
  }
}

TEST_F(NetnsLaunch, DuplicateNodeRankIsRefusedOnEveryNode) {
  NetnsCluster c(3);
  NodeLaunch job(c, {"--nproc-per-node", "2", "--rdzv-timeout", "20"});
  auto n0 = job.Start(0, kMatrix), n1 = job.Start(1, kMatrix);
  std::this_thread::sleep_for(500ms);
  auto again = job.StartAs(2, 1, kMatrix);  // node 2's machine claims rank 1 too
  auto r0 = n0->Wait(30s), r1 = n1->Wait(30s), r2 = again->Wait(30s);
  for (const auto* r : {&r0, &r1, &r2}) {
    EXPECT_EQ(r->exit_code, 3) << r0.output << r1.output << r2.output;
    EXPECT_NE(r->output.find("node rank 1 is claimed twice"), std::string::npos) << r->output;
    EXPECT_LT(r->seconds, 15) << r->output;
  }
  // The claimants are named by their hostnames.
  EXPECT_NE(r0.output.find("node1"), std::string::npos) << r0.output;
  EXPECT_NE(r0.output.find("node2"), std::string::npos) << r0.output;
}

// Node 1 runs its share of a long all-reduce loop; then every process in it is SIGKILLed
// (launcher and workers, as when a machine dies) or its link is cut (no RST, packets stop).
// Every other node must fail within the collective timeout (COHORT_TIMEOUT 8 s) and nothing may
// hang. The workers that notice name node 1's ranks (2 and 3) as the ones that stopped
// responding; a node whose workers were stopped first by another node's failure relays that
// failure's line instead (the launcher passes on the first failure recorded, not its cause).
void ExpectNodeLossIsNamed(bool cut_link) {
  NetnsCluster c(3);
  NodeLaunch job(c, {"--nproc-per-node", "2", "--grace-period", "2"}, {{"COHORT_TIMEOUT", "8"}});
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(job.Start(i, kLoop));
  for (int i : {0, 2}) {
    ASSERT_TRUE(nodes[i]->AwaitLine(fmt::format("rank {} completed op 2", 2 * i), 30s))
        << nodes[i]->Output();
  }
  const auto t0 = std::chrono::steady_clock::now();
  if (cut_link) {
    c.SetLinkUp(1, false);
  } else {
    ASSERT_GE(c.KillAll(1, SIGKILL), 3);  // the launcher and its two workers
  }
  std::string survivors;
  for (int i : {0, 2}) {
    auto r = nodes[i]->Wait(60s);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_FALSE(r.timed_out) << r.output;
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_LT(took, cut_link ? 25 : 12) << r.output;
    const bool named = r.output.find("rank 2 stopped responding") != std::string::npos ||
                       r.output.find("on node 0 exited with code") != std::string::npos ||
                       r.output.find("on node 2 exited with code") != std::string::npos;
    EXPECT_TRUE(named) << "node " << i << " names neither node 1's ranks nor a relayed failure:\n"
                       << r.output;
    fmt::print("node {} failed {:.1f} s after node 1 was {}\n", i, took,
               cut_link ? "cut off" : "killed");
    survivors += r.output;
  }
  EXPECT_NE(survivors.find("rank 2 stopped responding"), std::string::npos) << survivors;
  EXPECT_NE(survivors.find("rank 3 stopped responding"), std::string::npos) << survivors;
  if (cut_link) {  // the cut-off node gives up too, on its own
    auto r = nodes[1]->Wait(60s);
    EXPECT_FALSE(r.timed_out) << r.output;
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("lost the rendezvous store"), std::string::npos) << r.output;
    fmt::print("node 1 (cut off) exited with {} after {:.1f} s\n", r.exit_code,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
}

TEST_F(NetnsLaunch, KilledNodeMakesTheOthersFailNamingIt) { ExpectNodeLossIsNamed(false); }

TEST_F(NetnsLaunch, CutLinkMidCollectiveMakesTheOthersFailNamingIt) {
  ExpectNodeLossIsNamed(true);
}

// --rdzv-backend etcd: the launchers meet on an etcd inside node 0 (10.77.0.1:2379) instead of
// a store hosted by node 0's launcher; the workers use a store that node 0's launcher hosts for
// the round (worker_store.h), so etcd holds the launchers' keys only.
TEST_F(NetnsLaunch, TwoNodesMeetThroughEtcd) {
  if (auto why = EtcdServer::UnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsCluster c(2);
  EtcdServer etcd(c.node(0).address, 2379, c.InNode(0, {}));
  // An etcd without users: --insecure-store (netns_token_test.cc runs one with auth enabled).
  NodeLaunch job(c, {"--nproc-per-node", "2", "--rdzv-backend", "etcd", "--insecure-store"});
  job.set_endpoint(etcd.endpoint());
  auto r = job.RunAll(kMatrix, 60s);
  ExpectMatrixPassed(r, 4);
  EXPECT_TRUE(Has(r[0], "the workers' store of this round listens at node0:")) << r[0].output;
  EXPECT_FALSE(Has(r[1], "the workers' store of this round listens")) << r[1].output;
  // The job's keys are in etcd, under its run id, and all of them are the launchers'.
  // (Read with curl through etcd's JSON gateway: a client other than cohort's own.)
  const std::string prefix = "cohort/netns-job/";
  const nlohmann::json body = {{"key", Base64Encode(prefix)},
                               {"range_end", Base64Encode(collectives::etcd::PrefixEnd(prefix))}};
  auto range = c.Start(1, {"/usr/bin/curl", "-s", "http://" + etcd.endpoint() + "/v3/kv/range",
                           "-d", body.dump()})
                   ->Wait(10s);
  ASSERT_EQ(range.exit_code, 0) << range.output;
  std::vector<std::string> keys;
  for (const auto& kv : nlohmann::json::parse(range.output).value("kvs", nlohmann::json::array())) {
    keys.push_back(Base64Decode(kv.value("key", ""), "a key etcd sent"));
  }
  // Both nodes' claims and done and exit marks, the round's MASTER_PORT and workers' store.
  EXPECT_GE(keys.size(), 8u) << range.output;
  // (EtcdStore puts the job's keys under cohort/<run>/, and the launchers' own are cohort/<run>/
  // launch/... inside that.)
  const std::string launchers = "cohort/netns-job/cohort/netns-job/launch/";
  for (const auto& key : keys) EXPECT_EQ(key.rfind(launchers, 0), 0u) << key;
  EXPECT_NE(std::find(keys.begin(), keys.end(), launchers + "0/workers-store"), keys.end())
      << range.output;
}

// --ps-servers with etcd: node 0, which hosts the round's services, starts the parameter
// servers and advertises them at its own name (node0), not at the rendezvous endpoint's host
// (here the same machine, 10.77.0.1), and the ps backend's matrix passes on both nodes.
TEST_F(NetnsLaunch, ParameterServersOfAnEtcdJobRunOnNodeZero) {
  if (auto why = EtcdServer::UnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsCluster c(2);
  EtcdServer etcd(c.node(0).address, 2379, c.InNode(0, {}));
  NodeLaunch job(c, {"--nproc-per-node", "2", "--rdzv-backend", "etcd", "--insecure-store",
                     "--backend", "ps", "--ps-servers", "2"});
  job.set_endpoint(etcd.endpoint());
  std::vector<std::unique_ptr<Subprocess>> nodes;
  const std::vector<std::string> matrix = {
      BinPath("collective_worker"), "--backend", "ps", "--mode", "matrix", "--skip",
      "reducescatter,sendrecv", "--counts", "0,7,1031", "--dtypes", "f32,i64"};
  for (int i = 0; i < 2; ++i) nodes.push_back(job.Start(i, matrix));
  for (int n = 0; n < 2; ++n) {
    const auto r = nodes[n]->Wait(90s);
    EXPECT_EQ(Has(r, "started 2 ps-servers on node0:"), n == 0) << r.output;
    ExpectRanksPassed(r, n, {2 * n, 2 * n + 1}, 4, "ps");
  }
}

}  // namespace
}  // namespace cohort::testing
