// How a worker finds its rendezvous store from the environment (the env contract in DESIGN.md):
//   COHORT_STORE=host:port [COHORT_TOKEN] [COHORT_STORE_TIMEOUT]: connect to that store
//   (etcd://host:port: an etcd, keys under cohort/<COHORT_RUN_ID>/; store_backends.h);
//   else MASTER_ADDR + MASTER_PORT (torchrun's convention): the process of rank 0 (COHORT_RANK,
//   else RANK, else OMPI_COMM_WORLD_RANK) hosts a store on MASTER_PORT, and every process, rank 0
//   included, connects to MASTER_ADDR:MASTER_PORT;
//   else, under a single-node mpirun, MpiSingleNodeStoreEndpoint() the same way.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "collectives/store/store.h"
#include "common/env.h"

namespace cohort::collectives {

// What the environment asks for, read but not acted on.
struct StoreEnv {
  std::string address;                        // host:port to connect to
  std::string token;                          // COHORT_TOKEN; empty: no authentication
  std::chrono::milliseconds connect_timeout;  // COHORT_STORE_TIMEOUT, default 60 s
  bool host_server = false;                   // this process hosts the store (rank 0, MASTER_*)
  int host_port = 0;                          // the port to host it on when host_server
};

// Reads the variables above. Throws InvalidArgument, naming the variables to set, when neither
// COHORT_STORE nor MASTER_ADDR/MASTER_PORT is set, or when MASTER_* is used without a rank.
StoreEnv ReadStoreEnv();

// Under mpirun with every rank on this node (and no other store configured): 127.0.0.1 and a
// port derived from the mpirun job id, so that ranks agree on it without talking; rank 0 hosts.
// nullopt otherwise.
// from: the environment to read (nullptr: the process environment).
std::optional<std::string> MpiSingleNodeStoreEndpoint(const env::Map* from = nullptr);

// Starts a store server on host:port (port 0: a free one; *bound_port, if given, receives it) and
// returns a client of it that keeps the server alive as long as it lives. Throws Unavailable when
// the port cannot be bound.
std::shared_ptr<Store> HostStore(const std::string& host, int port, const std::string& token,
                                 std::chrono::milliseconds connect_timeout, int* bound_port);

// Connects to the store the environment names, first starting it in this process when this is
// the rank that hosts it; the returned store keeps that server alive as long as it lives.
// Throws what ReadStoreEnv, GrpcStoreServer::Start and GrpcStoreClient::Connect throw.
std::shared_ptr<Store> ConnectStoreFromEnv();

}  // namespace cohort::collectives
