// One shard of the parameter server behind the `ps` backend (`cohort ps-server`). It keeps no
// tensors between collectives: it matches the pushes of every rank for one partition, combines
// them in rank order and answers each rank (PushTable). No thread waits with a pending push.
//
// Authentication: with a non-empty token every call must carry "authorization: Bearer <token>";
// others are refused with PERMISSION_DENIED. An empty token requires none: trusted networks
// only.
#pragma once

#include <functional>
#include <memory>
#include <string>

namespace cohort::collectives::ps {

class PsServer {
 public:
  // Will serve as shard `shard` of `shards` on host:port (port 0: a free one, chosen at Start).
  // Throws InvalidArgument for a port out of range or a shard outside 0..shards-1.
  PsServer(std::string host, int port, std::string token, int shard, int shards);
  // Shuts down.
  ~PsServer();
  PsServer(const PsServer&) = delete;
  PsServer& operator=(const PsServer&) = delete;

  // What to do when a worker's launcher says the job is over (PsService.Finish, with the job's
  // run id): called on a gRPC thread after the call is answered, at most once; it must not
  // block (`cohort ps-server` wakes its main thread, which shuts the server down and exits 0).
  // Without one (a server a launcher runs itself, tests) Finish is answered and ignored. Call
  // before Start.
  void OnFinish(std::function<void(const std::string& run_id)> handler);
  // Starts listening. Throws Unavailable when the port cannot be bound.
  void Start();
  // Stops serving; pending pushes fail (their workers get UNAVAILABLE). Idempotent.
  void Shutdown();
  // The port it listens on; 0 before Start().
  int Port() const;
  // "host:port" as it listens.
  std::string Address() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::collectives::ps
