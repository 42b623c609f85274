// Slow and cut links without tc netem: tests/util/tcp_proxy.h between a client and a server,
// then between node 1 and node 0's rendezvous store (two launchers on 127.0.0.1; node 1 and its
// workers reach the store only through the proxy; Gloo's own connections go direct, because
// their ports are picked at run time). A slow link still gives every rank the right sums; a cut
// one makes every node fail within its timeouts, naming what was lost, and nothing hangs.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "common/net.h"
#include "tests/util/launch_env.h"
#include "tests/util/subprocess.h"
#include "tests/util/tcp_proxy.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Env = std::map<std::string, std::string>;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// An echo server on 127.0.0.1: one connection at a time, every byte sent back.
class Echo {
 public:
  Echo() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(fd_, 8);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // closed
        char buf[8192];
        for (ssize_t n; (n = ::read(c, buf, sizeof(buf))) > 0;) ::send(c, buf, n, MSG_NOSIGNAL);
        ::close(c);
      }
    });
  }
  ~Echo() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }

 private:
  int fd_ = -1, port_ = 0;
  std::thread thread_;
};

int Dial(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};  // no test read waits longer
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Sends `bytes` through fd (from a thread) and reads the echo back; true when it is identical.
bool RoundTrip(int fd, const std::string& bytes) {
  std::thread sender([&] { ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL); });
  std::string back;
  char buf[65536];
  while (back.size() < bytes.size()) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    back.append(buf, static_cast<size_t>(n));
  }
  sender.join();
  return back == bytes;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) % 251);
  return s;
}

// ---- the proxy itself ----

TEST(TcpProxy, ForwardsEveryByteBothWays) {
  Echo echo;
  TcpProxy proxy("127.0.0.1", echo.port());
  const int fd = Dial(proxy.port());
  ASSERT_GE(fd, 0);
  for (size_t n : {size_t{1}, size_t{7}, size_t{1000003}}) {  // odd and prime sizes
    EXPECT_TRUE(RoundTrip(fd, Pattern(n))) << n << " bytes";
  }
  ::close(fd);
  EXPECT_EQ(proxy.accepted(), 1);
  // The proxy counts a chunk once its send() has returned, so the echo of the last one can
  // reach us first (seen at -j2: 31811 bytes short): give the count up to 2 s to catch up.
  const int64_t want = 2 * (1 + 7 + 1000003);
  for (int i = 0; i < 200 && proxy.forwarded() < want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(proxy.forwarded(), want);
}

TEST(TcpProxy, DelaysEachChunkAndThrottles) {
  Echo echo;
  TcpProxy proxy("127.0.0.1", echo.port());
  proxy.SetDelay(100ms);
  const int fd = Dial(proxy.port());
  ASSERT_GE(fd, 0);
  auto t0 = Clock::now();
  EXPECT_TRUE(RoundTrip(fd, "ping"));
  const double rtt = SecondsSince(t0);
  EXPECT_GE(rtt, 0.2);  // 100 ms each way
  EXPECT_LT(rtt, 1.0);
  proxy.SetDelay(0ms);
  proxy.SetRate(200 * 1000);  // 200 kB/s each way: 100 kB takes about 0.5 s, pipelined
  t0 = Clock::now();
  EXPECT_TRUE(RoundTrip(fd, Pattern(100 * 1000)));
  const double took = SecondsSince(t0);
  EXPECT_GE(took, 0.4);
  EXPECT_LT(took, 3.0);
  fmt::print("100 ms delay: round trip {:.3f} s; 100 kB at 200 kB/s: {:.3f} s\n", rtt, took);
  ::close(fd);
}

TEST(TcpProxy, CutResetsOpenConnectionsAndRefusesNewOnesUntilRestored) {
  Echo echo;
  TcpProxy proxy("127.0.0.1", echo.port());
  const int fd = Dial(proxy.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(RoundTrip(fd, "before"));
  proxy.CutAll();
  char c;
  const auto t0 = Clock::now();
  const ssize_t n = ::read(fd, &c, 1);
  EXPECT_LE(n, 0);
  EXPECT_TRUE(n == 0 || errno == ECONNRESET) << std::strerror(errno);
  EXPECT_LT(SecondsSince(t0), 2);  // at once, not at the 10 s read timeout
  ::close(fd);
  const int again = Dial(proxy.port());  // accepted, then reset
  ASSERT_GE(again, 0);
  EXPECT_LE(::read(again, &c, 1), 0);
  ::close(again);
  proxy.Restore();
  const int after = Dial(proxy.port());
  ASSERT_GE(after, 0);
  EXPECT_TRUE(RoundTrip(after, "after"));
  ::close(after);
}

// ---- two launchers, node 1 behind the proxy ----

// The launcher's own lines of an output ("[cohort launch ...] ...").
std::string LauncherLines(const std::string& output) {
  std::string out;
  for (size_t at = 0; at < output.size();) {
    size_t end = output.find('\n', at);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(at, end - at);
    if (line.rfind("[cohort launch", 0) == 0) out += line + "\n";
    at = end + 1;
  }
  return out;
}

Env Clean() {
  return LauncherTestEnv(
      {{"COHORT_LOG_LEVEL", "warn"}, {"COHORT_TOKEN", "link-t0k"}, {"COHORT_TIMEOUT", "8"}});
}

std::vector<std::string> Node(int rank, const std::string& endpoint,
                              const std::vector<std::string>& program) {
  std::vector<std::string> argv = {BinPath("cohort"),
                                   "launch",
                                   "--nnodes",
                                   "2",
                                   "--node-rank",
                                   std::to_string(rank),
                                   "--rdzv-endpoint",
                                   endpoint,
                                   "--nproc-per-node",
                                   "2",
                                   "--grace-period",
                                   "2",
                                   "--rdzv-timeout",
                                   "20",
                                   "--"};
  argv.insert(argv.end(), program.begin(), program.end());
  return argv;
}

TEST(Link, SlowLinkToTheStoreStillGivesEveryRankTheRightSums) {
  const int port = net::FreePort();
  TcpProxy proxy("127.0.0.1", port);
  proxy.SetDelay(30ms);
  proxy.SetRate(1 << 20);
  const std::vector<std::string> ok = {BinPath("launch_test_worker"), "--mode", "ok"};
  auto r = RunAll({Node(0, fmt::format("127.0.0.1:{}", port), ok), Node(1, proxy.address(), ok)},
                  {Clean(), Clean()}, 90s);
  for (int n : {0, 1}) {
    ASSERT_EQ(r[n].exit_code, 0) << r[0].output << r[1].output;
    // The worker checks every one of its 20 all-reduces against n(n-1)/2 and exits 1 otherwise.
    for (int l : {0, 1}) {
      EXPECT_NE(r[n].output.find(fmt::format("rank {} of 4 ok", 2 * n + l)), std::string::npos)
          << r[n].output;
    }
  }
  EXPECT_GT(proxy.accepted(), 2);  // node 1's launcher and both its workers came through it
  fmt::print("slow link: node 1 took {:.1f} s, {} connections, {} bytes through the proxy\n",
             r[1].seconds, proxy.accepted(), proxy.forwarded());
}

TEST(Link, CutLinkMakesEveryNodeFailWithinTheTimeoutNamingTheLoss) {
  const int port = net::FreePort();
  TcpProxy proxy("127.0.0.1", port);
  const std::vector<std::string> loop = {BinPath("collective_worker"),
                                         "--backend",
                                         "gloo",
                                         "--mode",
                                         "kill",
                                         "--victim",
                                         "-1",
                                         "--at",
                                         "100000"};
  Subprocess n0(Node(0, fmt::format("127.0.0.1:{}", port), loop), Clean());
  Subprocess n1(Node(1, proxy.address(), loop), Clean());
  ASSERT_TRUE(n0.AwaitLine("rank 0 completed op 2", 30s)) << n0.Output() << n1.Output();
  ASSERT_TRUE(n1.AwaitLine("rank 2 completed op 2", 30s)) << n0.Output() << n1.Output();
  const auto t0 = Clock::now();
  proxy.CutAll();
  auto r1 = n1.Wait(60s);
  const double t1 = SecondsSince(t0);
  auto r0 = n0.Wait(60s);
  const double t0s = SecondsSince(t0);
  EXPECT_FALSE(r1.timed_out) << r1.output;
  EXPECT_NE(r1.exit_code, 0) << r1.output;
  EXPECT_NE(r1.output.find("lost the rendezvous store"), std::string::npos) << r1.output;
  EXPECT_FALSE(r0.timed_out) << r0.output;
  EXPECT_NE(r0.exit_code, 0) << r0.output;
  // Node 0 learns it from its workers: node 1's ranks (2, 3) went away mid-collective.
  std::string named;
  for (const char* who : {"rank 2 ", "rank 3 "}) {
    const size_t at = r0.output.find(who);
    if (at != std::string::npos) named = r0.output.substr(at, r0.output.find('\n', at) - at);
  }
  EXPECT_NE(named.find("stopped responding"), std::string::npos) << r0.output;
  fmt::print("node 0's workers: ...{}\n", named);
  EXPECT_LT(t1, 25) << r1.output;
  EXPECT_LT(t0s, 30) << r0.output;
  fmt::print("cut link: node 1 exited {} after {:.1f} s, node 0 exited {} after {:.1f} s\n",
             r1.exit_code, t1, r0.exit_code, t0s);
  for (const auto* r : {&r1, &r0}) fmt::print("{}", LauncherLines(r->output));
}

}  // namespace
}  // namespace cohort::testing
