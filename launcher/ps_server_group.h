// The parameter servers `cohort launch --ps-servers N` runs beside the workers on node 0 (or
// --ps-servers-per-node N, on every node): N `cohort ps-server` processes (this same binary),
// each on a port it picks itself and reports on its first line of output; stopped with the
// launcher.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace cohort::launcher {

class PsServerGroup {
 public:
  // Starts shards first..first+n-1 of `shards` listening on bind_host, with COHORT_TOKEN=token,
  // and waits (up to timeout) until each reports its port. advertise_host is how workers reach
  // them. Throws Unavailable naming the shard that did not start.
  PsServerGroup(int first, int n, int shards, const std::string& bind_host,
                const std::string& advertise_host, const std::string& token,
                std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL after a second, and reaps them.
  ~PsServerGroup();
  PsServerGroup(const PsServerGroup&) = delete;
  PsServerGroup& operator=(const PsServerGroup&) = delete;

  // "host:port,host:port,...": COHORT_PS_SERVERS for the workers.
  const std::string& Addresses() const { return addresses_; }
  // Empty while every server runs, else "ps-server shard 1 exited with code 1" for the first
  // one that ended; never blocks.
  std::string Dead();
  // True while every server runs; never blocks.
  bool AllRunning();

 private:
  struct Server {
    pid_t pid = -1;
    bool running = false;
  };
  // Spawns shard i of n with stdout on out_fd.
  pid_t Spawn(int i, int n, const std::string& bind_host, const std::string& token, int out_fd);
  void StopAll();

  int first_ = 0;  // the shard number of servers_[0]
  std::vector<Server> servers_;
  std::string addresses_;
};

struct LaunchPlan;

// After the job succeeded, on the node of global rank 0: tells the parameter servers of this
// launcher's COHORT_PS_SERVERS that the job is over, so that servers running on their own exit 0
// (a Kubernetes parameter-server pod's Job then completes instead of running forever). Nothing
// when this launcher ran its own (--ps-servers: it stops them) or none are configured. Returns
// what to say: "told 2 ps-servers that the job finished", one line per server that did not take
// it, or nothing.
std::vector<std::string> FinishStandaloneServers(const LaunchPlan& plan);

}  // namespace cohort::launcher
