// Slow and cut links between namespace nodes without tc netem: node 1 reaches node 0's
// rendezvous store only through tests/util/tcp_proxy.h, listening on node 1's own address
// (10.77.0.2) inside node 1's namespace; node 1's launcher and workers use it as the store.
// Gloo's connections between the nodes go direct (their ports are picked at run time). A slow
// link still gives every rank the right values; a cut one makes both nodes fail within the
// timeouts, node 0 naming node 1's ranks, and nothing hangs.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/netns/netns_launch.h"
#include "tests/util/tcp_proxy.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

class NetnsLink : public NetnsTest {
 protected:
  void SetUp() override {
    NetnsTest::SetUp();
    if (IsSkipped()) return;
    cluster_ = std::make_unique<NetnsCluster>(2);
    proxy_ = std::make_unique<TcpProxy>(cluster_->node(0).address, 29500, cluster_->node(1).address,
                                        cluster_->node(1).netns);
  }
  // Node 0 as usual; node 1 with the proxy as its rendezvous endpoint.
  std::vector<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& program) {
    const std::vector<std::string> flags = {"--nproc-per-node", "2", "--grace-period", "2"};
    NodeLaunch direct(*cluster_, flags, {{"COHORT_TIMEOUT", "8"}});
    NodeLaunch proxied(*cluster_, flags, {{"COHORT_TIMEOUT", "8"}});
    proxied.set_endpoint(proxy_->address());
    std::vector<std::unique_ptr<Subprocess>> nodes;
    nodes.push_back(direct.Start(0, program));
    nodes.push_back(proxied.Start(1, program));
    return nodes;
  }
  std::unique_ptr<NetnsCluster> cluster_;
  std::unique_ptr<TcpProxy> proxy_;
};

TEST_F(NetnsLink, SlowLinkStillGivesEveryRankTheRightValues) {
  proxy_->SetDelay(30ms);
  proxy_->SetRate(1 << 20);
  auto nodes = Start(kMatrix);
  std::vector<ProcessResult> r;
  for (auto& n : nodes) r.push_back(n->Wait(90s));
  ExpectMatrixPassed(r, 4);
  EXPECT_GT(proxy_->accepted(), 2);  // node 1's launcher and both its workers
  fmt::print("slow link: node 1 took {:.1f} s, {} connections, {} bytes through the proxy\n",
             r[1].seconds, proxy_->accepted(), proxy_->forwarded());
}

TEST_F(NetnsLink, CutLinkMakesBothNodesFailNamingNodeOnesRanks) {
  auto nodes = Start(kLoop);
  ASSERT_TRUE(nodes[0]->AwaitLine("rank 0 completed op 2", 30s)) << nodes[0]->Output();
  ASSERT_TRUE(nodes[1]->AwaitLine("rank 2 completed op 2", 30s)) << nodes[1]->Output();
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  proxy_->CutAll();
  auto r1 = nodes[1]->Wait(60s);
  const double t1 = since();
  auto r0 = nodes[0]->Wait(60s);
  const double t0s = since();
  for (const auto* r : {&r0, &r1}) {
    EXPECT_FALSE(r->timed_out) << r->output;
    EXPECT_NE(r->exit_code, 0) << r->output;
  }
  EXPECT_NE(r1.output.find("lost the rendezvous store"), std::string::npos) << r1.output;
  const bool named = r0.output.find("rank 2 stopped responding") != std::string::npos ||
                     r0.output.find("rank 3 stopped responding") != std::string::npos;
  EXPECT_TRUE(named) << r0.output;
  EXPECT_LT(t1, 25) << r1.output;
  EXPECT_LT(t0s, 30) << r0.output;
  fmt::print("cut link: node 1 exited {} after {:.1f} s, node 0 exited {} after {:.1f} s\n",
             r1.exit_code, t1, r0.exit_code, t0s);
}

}  // namespace
}  // namespace cohort::testing
