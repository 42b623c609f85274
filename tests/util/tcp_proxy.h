// A userspace TCP proxy for fault tests, where the kernel has no tc netem: listens on a port of
// its own and forwards every connection to a target host:port, both ways. It can hold each chunk
// for a delay (latency: chunks are timestamped when read and written once that much later, so
// the link stays pipelined), throttle each direction of each connection to a rate, and cut
// (reset, RST) every connection at once, refusing new ones until restored. Runs in the test
// process: one accept thread, two threads per direction of each connection.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cohort::testing {

class TcpProxy {
 public:
  // Listens on listen_host:0 (a free port) and forwards to target_host:target_port. With
  // `netns` (a name under /run/netns, as `ip netns add` makes them) both its listening socket
  // and the ones it dials live in that network namespace (its accept thread enters it), so a
  // node of tests/util/netns.h can reach another through it. Throws std::runtime_error when it
  // cannot listen.
  TcpProxy(const std::string& target_host, int target_port,
           const std::string& listen_host = "127.0.0.1", const std::string& netns = "");
  ~TcpProxy();  // closes everything and joins every thread
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  // "listen_host:port", to give clients instead of the target.
  std::string address() const;

  // Every chunk read from now on is written `delay` later.
  void SetDelay(std::chrono::milliseconds delay) { delay_ms_ = delay.count(); }
  // Each direction of each connection sends at most bytes_per_second (0: unlimited).
  void SetRate(int64_t bytes_per_second) { rate_ = bytes_per_second; }
  // Resets every open connection (both sides get RST) and refuses new ones (accepted, then
  // reset at once) until Restore().
  void CutAll();
  void Restore() { cut_ = false; }

  // Connections accepted so far, and bytes forwarded (both directions).
  int accepted() const { return accepted_; }
  int64_t forwarded() const { return forwarded_; }

 private:
  struct Link;  // one proxied connection

  // Enters the namespace (if any) and listens; returns the port, or throws.
  int Listen(const std::string& netns);
  void AcceptLoop();
  // Connects to the target; -1 when it cannot.
  int Dial() const;
  void Pump(const std::shared_ptr<Link>& link, int from, int to);

  std::string listen_host_, target_host_;
  int target_port_ = 0;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::atomic<int64_t> delay_ms_{0};
  std::atomic<int64_t> rate_{0};
  std::atomic<int> accepted_{0};
  std::atomic<int64_t> forwarded_{0};
  std::thread acceptor_;
  std::mutex mu_;
  // The pumps own the links (a link closes when both its directions end); these are for CutAll.
  std::vector<std::weak_ptr<Link>> links_;  // guarded by mu_
  std::vector<std::thread> pumps_;          // guarded by mu_
};

}  // namespace cohort::testing
