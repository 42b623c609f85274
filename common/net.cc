#include "common/net.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "common/check.h"
#include "common/error.h"

namespace cohort::net {

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

HostPort ParseHostPort(const std::string& text, const std::string& what, bool allow_port_zero) {
  auto bad = [&]() {
    return InvalidArgument(
        fmt::format("{}='{}' is not host:port; write it as 10.0.0.5:29500", what, text));
  };
  HostPort hp;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw bad();
    }
    hp.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) throw bad();
    hp.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (hp.host.find(':') != std::string::npos) throw bad();
  }
  if (hp.host.empty()) hp.host = "127.0.0.1";
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    throw bad();
  }
  hp.port = std::stoi(port);
  if (hp.port < (allow_port_zero ? 0 : 1) || hp.port > 65535) throw bad();
  return hp;
}

int FreePort() {
  int fd = COHORT_SYSCHECK(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  try {
    COHORT_SYSCHECK(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    COHORT_SYSCHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace {

// Whether 0.0.0.0:port can be bound now (SO_REUSEADDR, as the HTTP and gRPC servers bind).
bool Bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int FreePortRange(int count) {
  int ephemeral_low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low;
  const int low = 10000;
  const int high = ephemeral_low - count;  // the block ends below the ephemeral range
  if (count < 1 || high <= low) {
    throw InvalidArgument(fmt::format(
        "no block of {} ports fits between {} and the ephemeral range at {}", count, low,
        ephemeral_low));
  }
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(low, high);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int base = pick(rng);
    bool free = true;
    for (int i = 0; i < count && free; ++i) free = Bindable(base + i);
    if (free) return base;
  }
  throw Unavailable(fmt::format("found no {} consecutive free ports below {} in 200 tries", count,
                                ephemeral_low));
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

std::string Hostname() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == 0) return "localhost";
  return name;
}

}  // namespace cohort::net
