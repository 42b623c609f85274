// The rendezvous store as a gRPC service, embeddable in any process: the launcher of node 0,
// rank 0 when no launcher runs, `cohort store`, or a test. Waiting calls (Get, Wait) hold no
// thread while they wait, so one server keeps thousands of workers waiting.
//
// Authentication: every call must carry metadata "authorization: Bearer <token>"; a missing or
// wrong token is refused with UNAUTHENTICATED. A server built with an EMPTY token requires none:
// anyone who reaches the port may read and write, so use it only on a trusted network.
#pragma once

#include <memory>
#include <string>

#include "collectives/store/kv_table.h"

namespace cohort::collectives {

class GrpcStoreServer {
 public:
  // Will serve `table` (a new one when null) on host:port; port 0 picks a free port at Start().
  GrpcStoreServer(std::string host, int port, std::string token,
                  std::shared_ptr<KvTable> table = nullptr);
  // Shuts down.
  ~GrpcStoreServer();
  GrpcStoreServer(const GrpcStoreServer&) = delete;
  GrpcStoreServer& operator=(const GrpcStoreServer&) = delete;

  // Starts listening and logs the address. Throws Unavailable when the port cannot be bound
  // (in use, or a host that is not this machine's), InvalidArgument when called twice.
  void Start();

  // Stops serving: calls still waiting are cancelled (their clients get Unavailable). Idempotent.
  void Shutdown();

  // The port it listens on (the chosen one when constructed with 0); 0 before Start().
  int Port() const;

  // "host:port" as it listens, e.g. "0.0.0.0:29500".
  std::string Address() const;

  // The table it serves.
  const std::shared_ptr<KvTable>& table() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::collectives
