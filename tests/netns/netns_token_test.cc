// No open doors between nodes (network namespaces, tests/util/netns.h): node 0's store listens on
// 10.77.0.1, which every node reaches, so a launch there needs COHORT_TOKEN. A node without it is
// refused before it starts anything, naming itself; a node with a wrong one is refused by node
// 0's store, which names its address, and node 0 names its rank at the rendezvous deadline.
// --insecure-store opens the door on purpose. The etcd rendezvous the same with etcd's users.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/collectives/store/etcd_fixture.h"
#include "tests/netns/netns_launch.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

bool Has(const ProcessResult& r, const std::string& text) {
  return r.output.find(text) != std::string::npos;
}

class NetnsToken : public NetnsTest {};

// Node 0 has the job's token; node 1 runs with `node1_env` and fails; node 0 names node 1.
std::vector<ProcessResult> NodeOneOdd(const NetnsCluster& c, const Env& node1_env) {
  const std::vector<std::string> flags = {"--nproc-per-node", "2", "--rdzv-timeout", "3"};
  NodeLaunch good(c, flags), odd(c, flags, node1_env);
  auto n0 = good.Start(0, kMatrix), n1 = odd.Start(1, kMatrix);
  auto r1 = n1->Wait(30s), r0 = n0->Wait(30s);
  EXPECT_EQ(r0.exit_code, 3) << r0.output;
  EXPECT_TRUE(Has(r0, "node rank 1 of 2 never joined the rendezvous at 10.77.0.1:29500"))
      << r0.output;
  EXPECT_LT(r0.seconds, 15) << r0.output;
  EXPECT_LT(r1.seconds, 15) << r1.output;
  return {r0, r1};
}

TEST_F(NetnsToken, NodeWithoutTheTokenIsRefusedAndNamed) {
  NetnsCluster c(2);
  auto r = NodeOneOdd(c, {{"COHORT_TOKEN", ""}});
  EXPECT_EQ(r[1].exit_code, 2) << r[1].output;
  EXPECT_TRUE(Has(r[1],
                  "node rank 1 (node1): no COHORT_TOKEN, and the rendezvous store at "
                  "10.77.0.1:29500 would listen on every interface"))
      << r[1].output;
  EXPECT_TRUE(Has(r[1], "--insecure-store")) << r[1].output;
  EXPECT_FALSE(Has(r[1], "started")) << r[1].output;
}

TEST_F(NetnsToken, NodeWithAWrongTokenIsRefusedAndNamed) {
  NetnsCluster c(2);
  auto r = NodeOneOdd(c, {{"COHORT_TOKEN", "not-the-job's"}});
  EXPECT_EQ(r[1].exit_code, 3) << r[1].output;
  EXPECT_TRUE(Has(r[1], "store at 10.77.0.1:29500 refused the token: COHORT_TOKEN differs"))
      << r[1].output;
  // Node 0's store says who knocked with the wrong token: node 1's address.
  EXPECT_TRUE(Has(r[0], "call from ipv4:10.77.0.2:")) << r[0].output;
  EXPECT_TRUE(Has(r[0], "the call's token is wrong")) << r[0].output;
}

TEST_F(NetnsToken, NoTokenOnAnyNodeIsRefusedOnEveryNode) {
  NetnsCluster c(3);
  NodeLaunch job(c, {"--nproc-per-node", "2"}, {{"COHORT_TOKEN", ""}});
  auto r = job.RunAll(kMatrix, 30s);
  for (int n = 0; n < 3; ++n) {
    EXPECT_EQ(r[n].exit_code, 2) << r[n].output;
    EXPECT_TRUE(Has(r[n], fmt::format("node rank {} (node{}): no COHORT_TOKEN", n, n)))
        << r[n].output;
    EXPECT_LT(r[n].seconds, 5) << r[n].output;
  }
}

TEST_F(NetnsToken, InsecureStoreOpensTheDoorOnPurpose) {
  NetnsCluster c(2);
  NodeLaunch job(c, {"--nproc-per-node", "2", "--insecure-store"}, {{"COHORT_TOKEN", ""}});
  auto r = job.RunAll(kMatrix, 60s);
  ExpectMatrixPassed(r, 4);
  for (const auto& n : r) {
    EXPECT_TRUE(Has(n, "cohort launch: warning: --insecure-store: no COHORT_TOKEN")) << n.output;
  }
}

// --rdzv-backend etcd on an etcd with auth enabled inside node 0.
class NetnsEtcdAuth : public NetnsToken {
 protected:
  void SetUp() override {
    NetnsToken::SetUp();
    if (IsSkipped()) return;
    if (auto why = EtcdServer::UnavailableReason(); !why.empty()) GTEST_SKIP() << why;
    cluster_ = std::make_unique<NetnsCluster>(2);
    etcd_ = std::make_unique<EtcdServer>(cluster_->node(0).address, 2379, cluster_->InNode(0, {}));
    etcd_->EnableAuth("r00t-pw");
  }
  std::vector<ProcessResult> Run(const Env& env, std::chrono::milliseconds timeout = 60s) {
    NodeLaunch job(*cluster_, {"--nproc-per-node", "2", "--rdzv-backend", "etcd"}, env);
    job.set_endpoint(etcd_->endpoint());
    return job.RunAll(kMatrix, timeout);
  }
  std::unique_ptr<NetnsCluster> cluster_;
  std::unique_ptr<EtcdServer> etcd_;
};

TEST_F(NetnsEtcdAuth, NodesWithTheEtcdUserMeetAndAllReduce) {
  ExpectMatrixPassed(Run({{"COHORT_RDZV_USER", "root"}, {"COHORT_RDZV_PASSWORD", "r00t-pw"}}), 4);
}

// Without COHORT_TOKEN the workers' store that node 0 hosts (worker_store.h) still asks for one:
// a token node 0 makes for the round and passes to node 1 through the authenticated etcd. Workers
// that did not get it would be refused, and the matrix would fail.
TEST_F(NetnsEtcdAuth, WithoutATokenTheWorkersStoreGetsOneOfItsOwn) {
  auto r = Run({{"COHORT_RDZV_USER", "root"}, {"COHORT_RDZV_PASSWORD", "r00t-pw"},
                {"COHORT_TOKEN", ""}});
  ExpectMatrixPassed(r, 4);
  EXPECT_TRUE(Has(r[0], "the workers' store of this round listens at node0:")) << r[0].output;
  for (const auto& n : r) EXPECT_FALSE(Has(n, "warning")) << n.output;
}

TEST_F(NetnsEtcdAuth, NodesWithoutCredentialsAreRefusedBeforeStarting) {
  auto r = Run({}, 30s);
  for (int n = 0; n < 2; ++n) {
    EXPECT_EQ(r[n].exit_code, 2) << r[n].output;
    EXPECT_TRUE(Has(r[n], fmt::format("node rank {} (node{}): no etcd credentials for the etcd "
                                      "at 10.77.0.1:2379",
                                      n, n)))
        << r[n].output;
    EXPECT_TRUE(Has(r[n], "set COHORT_RDZV_USER and COHORT_RDZV_PASSWORD")) << r[n].output;
  }
}

TEST_F(NetnsEtcdAuth, AWrongPasswordIsRefusedByEtcd) {
  auto r = Run({{"COHORT_RDZV_USER", "root"}, {"COHORT_RDZV_PASSWORD", "guess"}}, 30s);
  for (int n = 0; n < 2; ++n) {
    EXPECT_EQ(r[n].exit_code, 3) << r[n].output;
    EXPECT_TRUE(Has(r[n], "etcd at 10.77.0.1:2379 refused user 'root'")) << r[n].output;
    EXPECT_LT(r[n].seconds, 10) << r[n].output;
  }
}

}  // namespace
}  // namespace cohort::testing
