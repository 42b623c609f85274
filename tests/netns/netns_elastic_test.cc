// `cohort launch --nnodes MIN:MAX` over nodes that are network namespaces (tests/util/netns.h):
// every process of a node killed mid-training, a node added while the job runs, node 0 (the
// store's host) dying, and the Fashion-MNIST job with checkpoints across two nodes. The
// namespaces share the filesystem, so every node checkpoints into one folder, as nodes sharing
// a bucket do. The loopback versions are tests/launcher/elastic_test.cc.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "tests/collectives/store/etcd_fixture.h"
#include "tests/launcher/elastic_job.h"
#include "tests/netns/netns_launch.h"
#include "tests/util/test_dir.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

bool Has(const ProcessResult& r, const std::string& text) {
  return r.output.find(text) != std::string::npos;
}

// `cohort launch` on node i of the cluster with --node-rank i, node 0's address (or `endpoint`),
// and a clean environment with a token (a store beyond loopback needs one).
std::unique_ptr<Subprocess> StartNode(const NetnsCluster& c, int node,
                                      const std::vector<std::string>& flags,
                                      const std::vector<std::string>& program,
                                      const std::string& run, std::string endpoint = "",
                                      const Env& env = {}) {
  if (endpoint.empty()) endpoint = c.node(0).address + ":29500";
  std::vector<std::string> argv = {BinPath("cohort"),    "launch",          "--node-rank",
                                   std::to_string(node), "--rdzv-endpoint", endpoint};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back("--");
  argv.insert(argv.end(), program.begin(), program.end());
  Env e = env;
  e["COHORT_RUN_ID"] = run;
  return c.Start(node, argv, CleanLaunchEnv(e));
}

class NetnsElastic : public NetnsTest {};

class NetnsElasticTraining : public NetnsElastic {
 protected:
  void SetUp() override {
    NetnsElastic::SetUp();
    if (IsSkipped()) return;
    if (auto why = FashionMnistUnavailable(); !why.empty()) GTEST_SKIP() << why;
  }
};

// 3 nodes x 2 workers; every process of node 1 is SIGKILLed mid-training (a machine dying).
// Nodes 0 and 2 re-form at 2 nodes, resume from the newest snapshot and train every step.
TEST_F(NetnsElasticTraining, KilledNodeReformsAtTwoNodesAndTrainsThroughEveryStep) {
  NetnsCluster c(3);
  TestDir dir("netns-elastic");
  const std::string metrics = dir.File("metrics.jsonl");
  const auto program = FashionMnistJob(60, 10, metrics);
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(StartNode(c, i, ElasticFlags(dir, "2"), program, "netns-elastic-lost"));
  }
  ASSERT_TRUE(AwaitStep(metrics, 25, 90s)) << nodes[0]->Output();
  ASSERT_GE(c.KillAll(1, SIGKILL), 3);  // the launcher and its two workers
  auto r0 = nodes[0]->Wait(90s), r2 = nodes[2]->Wait(90s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r2.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  for (const auto* r : {&r0, &r2}) {
    EXPECT_TRUE(Has(*r, "re-formed at 2 nodes, a world of 4; lost node 1 (node1 pid "))
        << r->output;
  }
  EXPECT_TRUE(Has(r0, "attempt 2: started 2 workers (ranks 0..1) of a world of 4")) << r0.output;
  EXPECT_TRUE(Has(r2, "attempt 2: started 2 workers (ranks 2..3) of a world of 4")) << r2.output;
  fmt::print("node 0:\n{}", LauncherLines(r0.output));
  const auto resumed = ResumedFrom(r0.output);
  ASSERT_EQ(resumed.size(), 1u) << r0.output;
  EXPECT_EQ(resumed[0] % 10, 0) << r0.output;
  EXPECT_EQ(CheckSteps(ReadSteps(metrics), resumed, 60, 10), "") << r0.output;
}

// Node 1's link is cut mid-training (no RST: packets just stop). Nodes 0 and 2 notice through
// their collectives' timeout (COHORT_TIMEOUT 8 s) or node 1's missing keepalives, re-form at 2
// nodes without it and train every step; node 1, cut off from the store, gives up on its own.
TEST_F(NetnsElasticTraining, CutOffNodeIsLeftBehindAndTheOthersReform) {
  NetnsCluster c(3);
  TestDir dir("netns-elastic");
  const std::string metrics = dir.File("metrics.jsonl");
  const auto program = FashionMnistJob(60, 10, metrics);
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(StartNode(c, i, ElasticFlags(dir, "2"), program, "netns-elastic-cut", "",
                              {{"COHORT_TIMEOUT", "8"}}));
  }
  ASSERT_TRUE(AwaitStep(metrics, 25, 90s)) << nodes[0]->Output();
  c.SetLinkUp(1, false);
  auto r0 = nodes[0]->Wait(90s), r2 = nodes[2]->Wait(90s), r1 = nodes[1]->Wait(60s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r2.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  for (const auto* r : {&r0, &r2}) {
    EXPECT_TRUE(Has(*r, "re-formed at 2 nodes, a world of 4; lost node 1 (node1 pid "))
        << r->output;
  }
  EXPECT_FALSE(r1.timed_out) << r1.output;
  EXPECT_EQ(r1.exit_code, 3) << r1.output;
  EXPECT_TRUE(Has(r1, "lost the rendezvous store")) << r1.output;
  fmt::print("node 0:\n{}node 1:\n{}", LauncherLines(r0.output), LauncherLines(r1.output));
  const auto resumed = ResumedFrom(r0.output);
  ASSERT_EQ(resumed.size(), 1u) << r0.output;
  EXPECT_EQ(CheckSteps(ReadSteps(metrics), resumed, 60, 10), "") << r0.output;
}

// Nodes 0 and 1 train under --nnodes 2:3 (--max-restarts 0); node 2's launcher starts while
// they run, waits, and is admitted by a re-forming that saves a snapshot where they stand.
TEST_F(NetnsElasticTraining, LateNodeJoinsAtTheNextReforming) {
  NetnsCluster c(3);
  TestDir dir("netns-elastic");
  const std::string metrics = dir.File("metrics.jsonl");
  const auto program = FashionMnistJob(50, 10, metrics);
  const auto flags = ElasticFlags(dir, "0");
  auto n0 = StartNode(c, 0, flags, program, "netns-elastic-late");
  auto n1 = StartNode(c, 1, flags, program, "netns-elastic-late");
  ASSERT_TRUE(AwaitStep(metrics, 12, 90s)) << n0->Output();
  auto n2 = StartNode(c, 2, flags, program, "netns-elastic-late");
  auto r0 = n0->Wait(90s), r1 = n1->Wait(90s), r2 = n2->Wait(90s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r2.output;
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  EXPECT_TRUE(Has(r2, "waiting to join at the next re-forming")) << r2.output;
  EXPECT_TRUE(Has(r0, "node 2 (node2) is waiting to join: re-forming the group")) << r0.output;
  EXPECT_TRUE(Has(r1, "re-formed at 3 nodes, a world of 6; joined node 2 (node2 pid "))
      << r1.output;
  EXPECT_TRUE(Has(r2, "started 2 workers (ranks 4..5) of a world of 6")) << r2.output;
  fmt::print("node 0:\n{}", LauncherLines(r0.output));
  const auto resumed = ResumedFrom(r0.output);
  ASSERT_EQ(resumed.size(), 1u) << r0.output;
  EXPECT_GE(resumed[0], 12) << r0.output;
  EXPECT_EQ(CheckSteps(ReadSteps(metrics), resumed, 50, 0), "") << r0.output;
}

// Node 0's launcher hosts the store; every process of node 0 dies. Nodes 1 and 2 cannot re-form
// without it: they fail naming node 0, within seconds, instead of waiting for a rendezvous.
TEST_F(NetnsElastic, NodeZeroDyingFailsTheOthersNamingIt) {
  NetnsCluster c(3);
  const std::vector<std::string> flags = {"--nnodes",         "2:3", "--nproc-per-node", "2",
                                          "--rdzv-last-call", "1",   "--grace-period",   "5",
                                          "--max-restarts",   "3"};
  const std::vector<std::string> sleep = {BinPath("launch_test_worker"), "--mode", "sleep"};
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(StartNode(c, i, flags, sleep, "netns-elastic-0"));
  for (int i = 0; i < 3; ++i) {
    const int rank = 2 * i + 1;
    ASSERT_TRUE(nodes[i]->AwaitLine(fmt::format("rank {} sleeping", rank), 30s))
        << nodes[i]->Output();
  }
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_GE(c.KillAll(0, SIGKILL), 3);
  for (int i : {1, 2}) {
    auto r = nodes[i]->Wait(30s);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_TRUE(
        Has(r, "lost the rendezvous store (node 0's launcher at 10.77.0.1:29500 hosted it)"))
        << r.output;
    EXPECT_TRUE(Has(r, fmt::format("[rank {}] rank {} got SIGTERM", 2 * i, 2 * i))) << r.output;
    EXPECT_FALSE(Has(r, "restarting the group")) << r.output;
    EXPECT_LT(took, 10) << r.output;
  }
}

// With an external store (etcd, in a namespace of its own) no node is special: when every
// process of node 0 dies, nodes 1 and 2 re-form at 2 nodes without it and train every step.
TEST_F(NetnsElasticTraining, WithEtcdTheOthersReformWithoutNodeZero) {
  if (auto why = EtcdServer::UnavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsCluster c(4);  // node 3 runs etcd only
  EtcdServer etcd(c.node(3).address, 2379, c.InNode(3, {}));
  TestDir dir("netns-elastic");
  const std::string metrics = dir.File("metrics.jsonl");
  auto flags = ElasticFlags(dir, "2");
  for (const char* f : {"--rdzv-backend", "etcd", "--insecure-store"}) flags.push_back(f);
  const auto program = FashionMnistJob(60, 10, metrics);
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(StartNode(c, i, flags, program, "netns-elastic-etcd", etcd.endpoint()));
  }
  ASSERT_TRUE(AwaitStep(metrics, 25, 90s)) << nodes[0]->Output();
  ASSERT_GE(c.KillAll(0, SIGKILL), 3);
  auto r1 = nodes[1]->Wait(90s), r2 = nodes[2]->Wait(90s);
  ASSERT_EQ(r1.exit_code, 0) << r1.output << r2.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  for (const auto* r : {&r1, &r2}) {
    EXPECT_TRUE(Has(*r, "re-formed at 2 nodes, a world of 4; lost node 0 (node0 pid "))
        << r->output;
  }
  // Node 1 is the new round's node rank 0: its first worker is rank 0, and writes the log.
  EXPECT_TRUE(Has(r1, "attempt 2: started 2 workers (ranks 0..1) of a world of 4")) << r1.output;
  EXPECT_TRUE(Has(r2, "attempt 2: started 2 workers (ranks 2..3) of a world of 4")) << r2.output;
  fmt::print("node 1:\n{}", LauncherLines(r1.output));
  const auto resumed = ResumedFrom(r1.output);
  ASSERT_EQ(resumed.size(), 1u) << r1.output;
  EXPECT_EQ(CheckSteps(ReadSteps(metrics), resumed, 60, 10), "") << r1.output;
}

// Fashion-MNIST on 2 nodes x 2 workers with a snapshot every 20 steps; the last snapshot is the
// final step, complete, every shard's digest verified by `cohort checkpoint verify`.
TEST_F(NetnsElasticTraining, FashionMnistTwoNodesEndsWithAVerifiedSnapshot) {
  NetnsCluster c(2);
  TestDir dir("netns-fashion");
  const std::string metrics = dir.File("metrics.jsonl");
  const std::vector<std::string> flags = {"--nnodes",         "2",          "--nproc-per-node", "2",
                                          "--checkpoint-uri", dir.Uri("ck")};
  auto n0 = StartNode(c, 0, flags, FashionMnistJob(60, 20, metrics), "netns-fashion");
  auto n1 = StartNode(c, 1, flags, FashionMnistJob(60, 20, metrics), "netns-fashion");
  auto r0 = n0->Wait(90s), r1 = n1->Wait(90s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r1.output;
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  EXPECT_TRUE(Has(r0, "[rank 0] trained 60 steps in ")) << r0.output;
  EXPECT_TRUE(Has(r0, "test accuracy: ")) << r0.output;
  EXPECT_EQ(CheckSteps(ReadSteps(metrics), {}, 60, 0), "");
  Subprocess verify({BinPath("cohort"), "checkpoint", "verify", dir.Uri("ck/netns-fashion")}, {});
  auto v = verify.Wait(30s);
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_TRUE(
      Has(v, "latest      " + dir.Uri("ck/netns-fashion/latest") + " -> step-000000000060\n"))
      << v.output;
  EXPECT_TRUE(Has(v, "/step-000000000060  step 60, 4 shard(s), ")) << v.output;
  EXPECT_EQ(CountOf(v.output, "OK          "), 3) << v.output;  // 20, 40, 60
  EXPECT_EQ(CountOf(v.output, "BAD"), 0) << v.output;
}

}  // namespace
}  // namespace cohort::testing
