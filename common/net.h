// Small network helpers shared by the store, the backends and the tests.
#pragma once

#include <string>

namespace cohort::net {

struct HostPort {
  std::string host;
  int port = 0;
  std::string ToString() const;
};

// Parses "host:port", "[v6addr]:port" or ":port" (host defaults to 127.0.0.1). Throws
// InvalidArgument naming `what` (e.g. "COHORT_STORE") when the text is not of that form. Port 0
// ("pick a free one") is accepted only when allow_port_zero.
HostPort ParseHostPort(const std::string& text, const std::string& what,
                       bool allow_port_zero = false);

// A TCP port on 127.0.0.1 that was free a moment ago (bound and released).
int FreePort();

// The first of `count` consecutive TCP ports that were all free on 0.0.0.0 a moment ago, taken
// below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range) so that no outgoing
// connection can be handed one of them before their owner binds it. For tests and tools that give
// a block of ports to several processes (the launcher at base - 1, workers at base + local rank).
// Throws Unavailable after 200 tries.
int FreePortRange(int count);

// Whether `host` names this machine's loopback only: "localhost", 127.0.0.0/8 or ::1. A store or
// server bound or advertised on such a host cannot be reached from another machine.
bool IsLoopback(const std::string& host);

// This machine's host name (gethostname); "localhost" when it cannot be read.
std::string Hostname();

}  // namespace cohort::net
