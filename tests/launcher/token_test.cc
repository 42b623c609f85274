// No open doors by default: `cohort launch`, `cohort store` and `cohort ps-server` refuse to serve
// other machines without COHORT_TOKEN (one line saying how to set one) unless --insecure-store /
// --insecure; launchers meeting on 127.0.0.1 need none, because their store then listens on
// loopback only. Real processes, real sockets; what listens where is read from /proc/net/tcp.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/net.h"
#include "tests/util/launch_env.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

const std::string kCohort = BinPath("cohort");
const std::string kWorker = BinPath("launch_test_worker");

Env Clean(Env extra = {}) { return LauncherTestEnv({{"COHORT_LOG_LEVEL", "warn"}}, extra); }

// `cohort launch` node `rank` of 2 at endpoint, two workers each summing their ranks.
std::vector<std::string> Node(int rank, const std::string& endpoint,
                              std::vector<std::string> extra = {}, const std::string& mode = "ok") {
  std::vector<std::string> argv = {
      kCohort,           "launch", "--nnodes",         "2", "--node-rank", std::to_string(rank),
      "--rdzv-endpoint", endpoint, "--nproc-per-node", "2"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  for (const char* a : {"--", kWorker.c_str(), "--mode", mode.c_str()}) argv.push_back(a);
  return argv;
}

bool Has(const std::string& s, const std::string& text) {
  return s.find(text) != std::string::npos;
}

int Lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

std::string Ipv4(const std::string& hex_word) {  // /proc/net/tcp writes it little-endian
  const uint32_t a = static_cast<uint32_t>(std::stoul(hex_word, nullptr, 16));
  return fmt::format("{}.{}.{}.{}", a & 0xff, (a >> 8) & 0xff, (a >> 16) & 0xff, a >> 24);
}

// The addresses listening on TCP port `port` now, IPv4 or IPv4-mapped IPv6 (as gRPC binds):
// "127.0.0.1", "0.0.0.0" (every interface, also for IPv6's ::), else the raw IPv6 hex.
std::set<std::string> ListenAddresses(int port) {
  std::set<std::string> out;
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local, remote, state;
      f >> slot >> local >> remote >> state;
      if (state != "0A") continue;  // TCP_LISTEN
      const auto colon = local.find(':');
      if (std::stoi(local.substr(colon + 1), nullptr, 16) != port) continue;
      const std::string addr = local.substr(0, colon);
      if (addr.find_first_not_of('0') == std::string::npos) {
        out.insert("0.0.0.0");
      } else if (addr.size() == 8) {
        out.insert(Ipv4(addr));
      } else if (addr.rfind("0000000000000000FFFF0000", 0) == 0) {
        out.insert(Ipv4(addr.substr(24)));
      } else {
        out.insert(addr);
      }
    }
  }
  return out;
}

// ---- cohort launch ----

// This machine's name: not a loopback address to the launcher, yet it reaches this machine.
std::string NamedEndpoint(int port) { return fmt::format("{}:{}", net::Hostname(), port); }

TEST(Token, LaunchWithoutATokenOnAReachableEndpointIsRefusedInOneLine) {
  if (net::IsLoopback(net::Hostname())) GTEST_SKIP() << "this machine's name is a loopback one";
  const int port = net::FreePort();
  for (int rank : {0, 1}) {
    Subprocess p(Node(rank, NamedEndpoint(port)), Clean());
    auto r = p.Wait(20s);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(Lines(r.output), 1) << r.output;
    for (const char* want : {"COHORT_TOKEN", "--insecure-store", "openssl rand -hex 16",
                             "Kubernetes Secret", "would listen on every interface"}) {
      EXPECT_TRUE(Has(r.output, want)) << want << "\n" << r.output;
    }
    // It names the node that refused, by rank and host.
    EXPECT_TRUE(Has(r.output, fmt::format("node rank {} ({})", rank, net::Hostname()))) << r.output;
    EXPECT_FALSE(Has(r.output, "started")) << r.output;  // no store, no workers
    EXPECT_LT(r.seconds, 5) << r.output;
  }
  EXPECT_TRUE(ListenAddresses(port).empty());
}

TEST(Token, DryRunIsRefusedToo) {
  Subprocess p({kCohort, "launch", "--dry-run", "--", "./train"},
               Clean({{"PET_NNODES", "2"},
                      {"PET_NPROC_PER_NODE", "1"},
                      {"RANK", "1"},
                      {"MASTER_ADDR", "10.1.2.3"},
                      {"MASTER_PORT", "29500"}}));
  auto r = p.Wait(20s);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(Has(r.output, "no COHORT_TOKEN, and the rendezvous store at 10.1.2.3:29500"))
      << r.output;
}

TEST(Token, InsecureStoreRunsWithAWarningAndTheStoreListensEverywhere) {
  const int port = net::FreePort();
  Subprocess n0(Node(0, NamedEndpoint(port), {"--insecure-store"}, "sleep"), Clean());
  Subprocess n1(Node(1, NamedEndpoint(port), {"--insecure-store"}, "sleep"), Clean());
  ASSERT_TRUE(n0.AwaitLine("[rank 1] rank 1 sleeping", 30s)) << n0.Output() << n1.Output();
  ASSERT_TRUE(n1.AwaitLine("[rank 3] rank 3 sleeping", 30s)) << n0.Output() << n1.Output();
  EXPECT_EQ(ListenAddresses(port), std::set<std::string>{"0.0.0.0"});
  n0.Kill(SIGTERM);
  n1.Kill(SIGTERM);
  auto r0 = n0.Wait(30s), r1 = n1.Wait(30s);
  for (const auto* r : {&r0, &r1}) {
    EXPECT_TRUE(Has(r->output, "cohort launch: warning: --insecure-store: no COHORT_TOKEN"))
        << r->output;
  }
}

TEST(Token, InsecureStoreJobCompletesWithCorrectSums) {
  const int port = net::FreePort();
  auto r = RunAll({Node(0, NamedEndpoint(port), {"--insecure-store"}),
                   Node(1, NamedEndpoint(port), {"--insecure-store"})},
                  {Clean(), Clean()}, 60s);
  for (int n : {0, 1}) {
    ASSERT_EQ(r[n].exit_code, 0) << r[0].output << r[1].output;
    for (int l : {0, 1}) {
      const int rank = 2 * n + l;
      EXPECT_TRUE(Has(r[n].output, fmt::format("rank {} of 4 ok", rank))) << r[n].output;
    }
  }
}

// torchrun users run two launchers on 127.0.0.1: allowed without a token, and nothing listens
// beyond loopback then.
TEST(Token, LoopbackLaunchersNeedNoTokenAndListenOnLoopbackOnly) {
  const int port = net::FreePort();
  const std::string ep = fmt::format("127.0.0.1:{}", port);
  Subprocess n0(Node(0, ep, {}, "sleep"), Clean());
  Subprocess n1(Node(1, ep, {}, "sleep"), Clean());
  ASSERT_TRUE(n0.AwaitLine("[rank 0] rank 0 sleeping", 30s)) << n0.Output() << n1.Output();
  ASSERT_TRUE(n1.AwaitLine("[rank 2] rank 2 sleeping", 30s)) << n0.Output() << n1.Output();
  EXPECT_EQ(ListenAddresses(port), std::set<std::string>{"127.0.0.1"});
  n0.Kill(SIGTERM);
  n1.Kill(SIGTERM);
  auto r0 = n0.Wait(30s);
  EXPECT_FALSE(Has(r0.output, "warning")) << r0.output;
  auto dry = Subprocess({kCohort, "launch", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint",
                         ep, "--dry-run", "--", "./train"},
                        Clean())
                 .Wait(20s);
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_TRUE(Has(dry.output, "none needed: the store listens on 127.0.0.1")) << dry.output;
}

// Node 1 with another token is refused by node 0's store; node 0 names node 1's address in its
// warning and its rank at the rendezvous deadline.
TEST(Token, WrongTokenIsRefusedAndNamed) {
  const int port = net::FreePort();
  const std::string ep = fmt::format("127.0.0.1:{}", port);
  auto r = RunAll({Node(0, ep, {"--rdzv-timeout", "3"}), Node(1, ep, {"--rdzv-timeout", "3"})},
                  {Clean({{"COHORT_TOKEN", "right"}}), Clean({{"COHORT_TOKEN", "wrong"}})}, 30s);
  EXPECT_EQ(r[1].exit_code, 3) << r[1].output;
  EXPECT_TRUE(Has(r[1].output, "refused the token: COHORT_TOKEN differs from the store's"))
      << r[1].output;
  EXPECT_EQ(r[0].exit_code, 3) << r[0].output;
  EXPECT_TRUE(Has(r[0].output, "the call's token is wrong")) << r[0].output;
  EXPECT_TRUE(Has(r[0].output, "node rank 1 of 2 never joined")) << r[0].output;
  EXPECT_LT(r[0].seconds, 15) << r[0].output;
}

// ---- cohort store and cohort ps-server ----

void ExpectServerRefusesThenServes(const std::string& command, const std::string& harm) {
  auto refused = Subprocess({kCohort, command, "--port", "0"}, Clean()).Wait(20s);
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_EQ(Lines(refused.output), 1) << refused.output;
  for (const std::string& want : {std::string("COHORT_TOKEN"), std::string("--insecure"),
                                  std::string("--host 0.0.0.0"), harm}) {
    EXPECT_TRUE(Has(refused.output, want)) << want << "\n" << refused.output;
  }
  // --insecure serves everyone, with a warning; a loopback host or a token needs no flag.
  for (const auto& [flags, env, warns] :
       std::vector<std::tuple<std::vector<std::string>, Env, bool>>{
           {{"--insecure"}, Clean(), true},
           {{"--host", "127.0.0.1"}, Clean(), false},
           {{}, Clean({{"COHORT_TOKEN", "t"}}), false}}) {
    std::vector<std::string> argv = {kCohort, command, "--port", "0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    Subprocess p(argv, env);
    ASSERT_TRUE(p.AwaitLine("listening on", 20s)) << p.Output();
    p.Kill(SIGTERM);
    auto r = p.Wait(20s);
    EXPECT_EQ(Has(r.output, "--insecure: no token"), warns) << r.output;
  }
}

TEST(Token, StoreRefusesToServeTheNetworkWithoutAToken) {
  ExpectServerRefusesThenServes("store", "read and write this store");
}

TEST(Token, PsServerRefusesToServeTheNetworkWithoutAToken) {
  ExpectServerRefusesThenServes("ps-server", "take part in this job's collectives");
}

}  // namespace
}  // namespace cohort::testing
