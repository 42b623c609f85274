// `cohort launch --nnodes MIN:MAX` changing membership mid-training, on 127.0.0.1 (the same
// scenarios run over network namespaces in tests/netns/netns_elastic_test.cc): real launchers,
// real fashion_mnist workers checkpointing to a shared folder, a node's launcher killed (its
// workers die with it) or started late.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "common/net.h"
#include "tests/launcher/elastic_job.h"
#include "tests/netns/netns_launch.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

bool Has(const ProcessResult& r, const std::string& text) {
  return r.output.find(text) != std::string::npos;
}

// One launcher per loopback "node" of an elastic job: node i claims --node-rank i; node 0 hosts
// the store on a free port.
class LoopbackJob {
 public:
  LoopbackJob(std::vector<std::string> flags, const std::string& run)
      : flags_(std::move(flags)),
        env_(CleanLaunchEnv({{"COHORT_RUN_ID", run}})),
        endpoint_(fmt::format("127.0.0.1:{}", net::FreePort())) {}

  std::unique_ptr<Subprocess> Start(int node, const std::vector<std::string>& program) const {
    std::vector<std::string> argv = {BinPath("cohort"),    "launch",          "--node-rank",
                                     std::to_string(node), "--rdzv-endpoint", endpoint_};
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    argv.push_back("--");
    argv.insert(argv.end(), program.begin(), program.end());
    return std::make_unique<Subprocess>(argv, env_);
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  std::vector<std::string> flags_;
  Env env_;
  std::string endpoint_;
};

class ElasticLoopback : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = FashionMnistUnavailable(); !why.empty()) GTEST_SKIP() << why;
  }
};

// 3 nodes x 2 workers; node 1's launcher is SIGKILLed mid-training. Nodes 0 and 2 re-form at 2
// nodes (world 4), resume from the newest snapshot and finish every step.
TEST_F(ElasticLoopback, LostNodeReformsAtTwoNodesAndTrainsThroughEveryStep) {
  TestDir dir("elastic");
  const std::string metrics = dir.File("metrics.jsonl");
  LoopbackJob job(ElasticFlags(dir, "2"), "elastic-lost");
  const auto program = FashionMnistJob(70, 10, metrics);
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(job.Start(i, program));
  ASSERT_TRUE(AwaitStep(metrics, 25, 90s)) << nodes[0]->Output();
  nodes[1]->Kill(SIGKILL);
  auto r0 = nodes[0]->Wait(90s), r2 = nodes[2]->Wait(90s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r2.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  for (const auto* r : {&r0, &r2}) {
    EXPECT_TRUE(Has(*r, "re-formed at 2 nodes, a world of 4; lost node 1 (")) << r->output;
  }
  EXPECT_TRUE(Has(r0, "attempt 2: started 2 workers (ranks 0..1) of a world of 4")) << r0.output;
  EXPECT_TRUE(Has(r2, "attempt 2: started 2 workers (ranks 2..3) of a world of 4")) << r2.output;
  EXPECT_TRUE(Has(r0, "restarting the group: attempt 2 of 3")) << r0.output;
  fmt::print("node 0:\n{}", LauncherLines(r0.output));
  const auto resumed = ResumedFrom(r0.output);
  ASSERT_EQ(resumed.size(), 1u) << r0.output;
  EXPECT_EQ(resumed[0] % 10, 0) << r0.output;  // a periodic snapshot
  EXPECT_EQ(CheckSteps(ReadSteps(metrics), resumed, 70, 10), "") << r0.output;
}

// 2 nodes run --nnodes 2:3; a third launcher starts mid-training, waits, and is admitted by a
// re-forming that does not count as a restart (--max-restarts 0). The workers save a snapshot
// when stopped for it, so no step runs twice.
TEST_F(ElasticLoopback, LateNodeIsAdmittedByReformingWithoutRepeatingSteps) {
  TestDir dir("elastic");
  const std::string metrics = dir.File("metrics.jsonl");
  LoopbackJob job(ElasticFlags(dir, "0"), "elastic-late");
  const auto program = FashionMnistJob(60, 10, metrics);
  auto n0 = job.Start(0, program), n1 = job.Start(1, program);
  ASSERT_TRUE(AwaitStep(metrics, 15, 90s)) << n0->Output();
  auto n2 = job.Start(2, program);
  auto r0 = n0->Wait(90s), r1 = n1->Wait(90s), r2 = n2->Wait(90s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r2.output;
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  EXPECT_TRUE(Has(r2, "waiting to join at the next re-forming")) << r2.output;
  EXPECT_TRUE(Has(r0, "node 2 (")) << r0.output;
  EXPECT_TRUE(Has(r0, "is waiting to join: re-forming the group")) << r0.output;
  EXPECT_TRUE(Has(r0, "re-formed at 3 nodes, a world of 6; joined node 2 (")) << r0.output;
  EXPECT_TRUE(Has(r2, "started 2 workers (ranks 4..5) of a world of 6")) << r2.output;
  EXPECT_FALSE(Has(r0, "restarting the group")) << r0.output;
  fmt::print("node 0:\n{}", LauncherLines(r0.output));
  const auto resumed = ResumedFrom(r0.output);
  ASSERT_EQ(resumed.size(), 1u) << r0.output;
  EXPECT_GE(resumed[0], 15) << r0.output;  // the snapshot taken when stopped to re-form
  EXPECT_EQ(CheckSteps(ReadSteps(metrics), resumed, 60, 0), "") << r0.output;
}

// The test worker sleeps until SIGTERM (no collectives), so only the launchers' keepalives can
// tell that node 1 is gone; alone, node 0 is below MIN and fails naming node 1.
TEST(ElasticLoopbackMembership, BelowMinFailsNamingTheLostNode) {
  LoopbackJob job({"--nnodes", "2:3", "--nproc-per-node", "1", "--rdzv-last-call", "0.5",
                   "--rdzv-timeout", "4", "--grace-period", "2", "--max-restarts", "1"},
                  "elastic-below-min");
  const std::vector<std::string> sleep = {BinPath("launch_test_worker"), "--mode", "sleep"};
  auto n0 = job.Start(0, sleep), n1 = job.Start(1, sleep);
  ASSERT_TRUE(n0->AwaitLine("rank 0 sleeping", 30s)) << n0->Output();
  ASSERT_TRUE(n1->AwaitLine("rank 1 sleeping", 30s)) << n1->Output();
  n1->Kill(SIGKILL);
  auto r0 = n0->Wait(60s);
  EXPECT_EQ(r0.exit_code, 3) << r0.output;
  EXPECT_TRUE(Has(r0, "node 1 (")) << r0.output;
  EXPECT_TRUE(Has(r0, "was lost: its launcher sent no keepalive for 1")) << r0.output;
  EXPECT_TRUE(Has(r0, "only 1 node joined rendezvous round 1 at " + job.endpoint())) << r0.output;
  EXPECT_TRUE(Has(r0, "--nnodes 2:3 needs at least 2; lost: node 1 (")) << r0.output;
  EXPECT_LT(r0.seconds, 30) << r0.output;
}

// A job already at MAX has no room: a third launcher (node ranks by arrival) waits for a
// re-forming that never comes and gives up at --rdzv-timeout, saying why; the job runs on.
TEST(ElasticLoopbackMembership, NodeArrivingAtAFullJobWaitsAndGivesUpNamingTheSize) {
  const std::string endpoint = fmt::format("127.0.0.1:{}", net::FreePort());
  const Env env = CleanLaunchEnv({{"COHORT_RUN_ID", "elastic-full"}});
  auto launcher = [&] {
    return std::make_unique<Subprocess>(
        std::vector<std::string>{BinPath("cohort"), "launch", "--nnodes", "1:2", "--rdzv-endpoint",
                                 endpoint, "--rdzv-last-call", "0.5", "--rdzv-timeout", "3",
                                 "--nproc-per-node", "1", "--", BinPath("launch_test_worker"),
                                 "--mode", "sleep"},
        env);
  };
  auto a = launcher(), b = launcher();
  ASSERT_TRUE(a->AwaitLine("sleeping", 30s)) << a->Output();
  ASSERT_TRUE(b->AwaitLine("sleeping", 30s)) << b->Output();
  auto late = launcher()->Wait(30s);
  EXPECT_EQ(late.exit_code, 3) << late.output;
  EXPECT_TRUE(Has(late, "rendezvous round 0 is running without this node")) << late.output;
  EXPECT_TRUE(Has(late,
                  "waited 3 s (--rdzv-timeout) to join a job that keeps running without "
                  "this node; it has 2 of at most 2 nodes (--nnodes 1:2)"))
      << late.output;
  EXPECT_LT(late.seconds, 15) << late.output;
  // The job was not disturbed: no re-forming for a node there is no room for.
  for (const auto* p : {a.get(), b.get()}) {
    EXPECT_EQ(p->Output().find("re-form"), std::string::npos) << p->Output();
  }
}

// Node 0's launcher hosts the store: when it dies the others cannot re-form, and fail at once
// naming node 0 instead of waiting for a rendezvous that cannot happen.
TEST(ElasticLoopbackMembership, NodeZeroLostFailsTheOthersNamingIt) {
  LoopbackJob job({"--nnodes", "2:3", "--nproc-per-node", "1", "--rdzv-last-call", "0.5",
                   "--grace-period", "5", "--max-restarts", "3"},
                  "elastic-node0");
  const std::vector<std::string> sleep = {BinPath("launch_test_worker"), "--mode", "sleep"};
  std::vector<std::unique_ptr<Subprocess>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(job.Start(i, sleep));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(nodes[i]->AwaitLine(fmt::format("rank {} sleeping", i), 30s)) << nodes[i]->Output();
  }
  nodes[0]->Kill(SIGKILL);
  for (int i : {1, 2}) {
    auto r = nodes[i]->Wait(30s);
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_TRUE(
        Has(r, "lost the rendezvous store (node 0's launcher at " + job.endpoint() + " hosted it)"))
        << r.output;
    EXPECT_TRUE(Has(r, fmt::format("[rank {}] rank {} got SIGTERM", i, i))) << r.output;
    EXPECT_FALSE(Has(r, "restarting the group")) << r.output;
    EXPECT_LT(r.seconds, 20) << r.output;
  }
}

}  // namespace
}  // namespace cohort::testing
