#include "tests/util/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <stdexcept>

namespace cohort::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kChunk = 64 * 1024;
constexpr milliseconds kTick(20);  // how often a blocked thread looks at the stop flags

// Closing with SO_LINGER 0 sends RST instead of FIN.
void CloseWithReset(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
}

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(kTick.count())) > 0;
}

}  // namespace

// One proxied connection: the client's socket, the target's, and what each direction still
// has to write. The last thread to let go of it closes both sockets (with RST when cut).
struct TcpProxy::Link {
  struct Chunk {
    Clock::time_point read_at;
    std::string bytes;
  };
  struct Direction {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Chunk> queue;
    bool eof = false;
  };
  int client = -1, target = -1;
  std::atomic<bool> dead{false};
  std::atomic<bool> reset{false};
  Direction up, down;  // client -> target, target -> client

  Direction& From(int fd) { return fd == client ? up : down; }
  void Kill() {
    reset = true;
    dead = true;
    for (Direction* d : {&up, &down}) d->cv.notify_all();
  }
  ~Link() {
    for (int fd : {client, target}) {
      if (reset) {
        CloseWithReset(fd);
      } else {
        ::close(fd);
      }
    }
  }
};

TcpProxy::TcpProxy(const std::string& target_host, int target_port, const std::string& listen_host,
                   const std::string& netns)
    : listen_host_(listen_host), target_host_(target_host), target_port_(target_port) {
  std::promise<int> listening;
  std::future<int> port = listening.get_future();
  acceptor_ = std::thread([this, netns, &listening] {
    try {
      listening.set_value(Listen(netns));
    } catch (...) {
      listening.set_exception(std::current_exception());
      return;
    }
    AcceptLoop();
  });
  try {
    port_ = port.get();
  } catch (...) {
    acceptor_.join();
    throw;
  }
}

int TcpProxy::Listen(const std::string& netns) {
  if (!netns.empty()) {
    const int ns = ::open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      if (ns >= 0) ::close(ns);
      throw std::runtime_error("tcp proxy cannot enter network namespace " + netns + ": " +
                               std::strerror(errno));
    }
    ::close(ns);
  }
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (::inet_pton(AF_INET, listen_host_.c_str(), &addr.sin_addr) != 1 ||
      ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 128) != 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    throw std::runtime_error("tcp proxy cannot listen on " + listen_host_);
  }
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

TcpProxy::~TcpProxy() {
  stop_ = true;
  acceptor_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& weak : links_) {
      if (auto l = weak.lock()) l->Kill();
    }
    links_.clear();
  }
  for (auto& t : pumps_) t.join();  // no new pumps: the acceptor is gone
  ::close(listen_fd_);
}

std::string TcpProxy::address() const { return listen_host_ + ":" + std::to_string(port_); }

void TcpProxy::CutAll() {
  cut_ = true;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& weak : links_) {
    if (auto l = weak.lock()) l->Kill();
  }
  links_.clear();
}

int TcpProxy::Dial() const {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(target_host_.c_str(), std::to_string(target_port_).c_str(), &hints, &res)) {
    return -1;
  }
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  return fd;
}

void TcpProxy::AcceptLoop() {
  while (!stop_) {
    if (!Readable(listen_fd_)) continue;
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    ++accepted_;
    const int target = cut_ ? -1 : Dial();
    if (target < 0) {  // cut off, or the target is not there: the client sees a reset
      CloseWithReset(client);
      continue;
    }
    const int one = 1;
    for (int fd : {client, target}) ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto link = std::make_shared<Link>();
    link->client = client;
    link->target = target;
    std::lock_guard<std::mutex> lock(mu_);
    links_.push_back(link);
    pumps_.emplace_back([this, link] { Pump(link, link->client, link->target); });
    pumps_.emplace_back([this, link] { Pump(link, link->target, link->client); });
  }
}

// Reads `from` on a thread of its own into the direction's queue; writes the queue to `to` here,
// each chunk once its delay has passed and no faster than the rate.
void TcpProxy::Pump(const std::shared_ptr<Link>& link, int from, int to) {
  Link::Direction& dir = link->From(from);
  std::thread reader([&] {
    char buf[kChunk];
    while (!link->dead && !stop_) {
      if (!Readable(from)) continue;
      const ssize_t n = ::read(from, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard<std::mutex> lock(dir.mu);
      if (n <= 0) {
        dir.eof = true;
        if (n < 0) link->Kill();
      } else {
        dir.queue.push_back({Clock::now(), std::string(buf, static_cast<size_t>(n))});
      }
      dir.cv.notify_all();
      if (n <= 0) break;
    }
  });
  Clock::time_point next_send = Clock::now();
  while (!link->dead && !stop_) {
    Link::Chunk chunk;
    {
      std::unique_lock<std::mutex> lock(dir.mu);
      dir.cv.wait_for(lock, kTick, [&] { return !dir.queue.empty() || dir.eof || link->dead; });
      if (dir.queue.empty()) {
        if (dir.eof) {
          ::shutdown(to, SHUT_WR);  // pass the half-close on
          break;
        }
        continue;
      }
      chunk = std::move(dir.queue.front());
      dir.queue.pop_front();
    }
    const auto due = chunk.read_at + milliseconds(delay_ms_.load());
    while (Clock::now() < due && !link->dead) std::this_thread::sleep_for(milliseconds(1));
    for (size_t at = 0; at < chunk.bytes.size() && !link->dead;) {
      const int64_t rate = rate_;
      // Throttled: slices of 1/50 s worth of bytes, each sent when the rate allows it.
      const size_t slice = rate > 0 ? std::max<size_t>(1, static_cast<size_t>(rate / 50)) : kChunk;
      if (rate > 0) std::this_thread::sleep_until(std::max(next_send, Clock::now()));
      const ssize_t n = ::send(to, chunk.bytes.data() + at,
                               std::min(slice, chunk.bytes.size() - at), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        link->Kill();
        break;
      }
      at += static_cast<size_t>(n);
      forwarded_ += n;
      if (rate > 0) {
        next_send = std::max(next_send, Clock::now() - milliseconds(20)) +
                    std::chrono::microseconds(n * 1000000 / rate);
      }
    }
  }
  reader.join();
}

}  // namespace cohort::testing
