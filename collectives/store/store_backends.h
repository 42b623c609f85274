// The rendezvous store backends a launcher can meet on (`cohort launch --rdzv-backend NAME`),
// in one ordered list, the first being the default. A worker learns which one from COHORT_STORE:
// "host:port" is the first backend (cohort's gRPC store), "<scheme>host:port" the backend with
// that scheme ("etcd://host:2379").
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "collectives/store/store.h"

namespace cohort::collectives {

struct StoreConnectParams {
  std::string endpoint;  // host:port
  std::string token;     // COHORT_TOKEN (backends without authentication ignore it)
  std::string run_id;    // scopes the job's keys where the backend is shared between jobs
  std::chrono::milliseconds timeout{60000};  // to reach it
};

struct StoreBackend {
  std::string name;    // "grpc", "etcd"
  std::string scheme;  // prefix of COHORT_STORE; "" for the default backend
  // Whether node 0's launcher hosts the store (else it runs on its own, as etcd does).
  bool hosted_by_launcher = false;
  std::string help;  // one line for --help
  // Connects (waiting up to params.timeout for it). Throws Unavailable naming the endpoint.
  std::function<std::shared_ptr<Store>(const StoreConnectParams&)> connect;
};

// Every backend, the default first.
const std::vector<StoreBackend>& StoreBackends();

// "grpc, etcd".
std::string StoreBackendNames();

// The backend called name ("" is the default). Throws InvalidArgument naming the choices.
const StoreBackend& FindStoreBackend(const std::string& name);

// The backend a COHORT_STORE value names, and the host:port after its scheme.
const StoreBackend& BackendOfAddress(const std::string& address, std::string* endpoint);

}  // namespace cohort::collectives
