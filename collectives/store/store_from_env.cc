#include "collectives/store/store_from_env.h"

#include <fmt/format.h>

#include "collectives/store/grpc_store_client.h"
#include "collectives/store/grpc_store_server.h"
#include "collectives/store/store_backends.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "common/net.h"

namespace cohort::collectives {
namespace {

// A client that also owns the server it talks to (rank 0 under MASTER_ADDR/MASTER_PORT).
// Members are destroyed in reverse order: the client goes before the server.
class HostedStore : public Store {
 public:
  HostedStore(std::unique_ptr<GrpcStoreServer> server, std::unique_ptr<GrpcStoreClient> client)
      : server_(std::move(server)), client_(std::move(client)) {}

  void Set(const std::string& key, const std::string& value) override { client_->Set(key, value); }
  std::string Get(const std::string& key, Millis timeout) override {
    return client_->Get(key, timeout);
  }
  int64_t Add(const std::string& key, int64_t delta) override { return client_->Add(key, delta); }
  std::string CompareSet(const std::string& key, const std::string& expected,
                         const std::string& desired) override {
    return client_->CompareSet(key, expected, desired);
  }
  bool Delete(const std::string& key) override { return client_->Delete(key); }
  void Wait(const std::vector<std::string>& keys, Millis timeout) override {
    client_->Wait(keys, timeout);
  }
  std::map<std::string, std::string> List(const std::string& prefix) override {
    return client_->List(prefix);
  }
  bool Join(const std::string& prefix, int rank, int size, const std::string& nonce,
            Millis timeout) override {
    return client_->Join(prefix, rank, size, nonce, timeout);
  }
  bool Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) override {
    return client_->Arrive(prefix, rank, size, nonce);
  }

 private:
  std::unique_ptr<GrpcStoreServer> server_;
  std::unique_ptr<GrpcStoreClient> client_;
};

// The first rank variable that is set, or -1.
int64_t RankFromEnv() {
  for (const env::Var* var : {&env::kRank, &env::kTorchRank, &env::kOmpiRank}) {
    if (var->IsSet()) return var->Int(-1);
  }
  return -1;
}

}  // namespace

std::optional<std::string> MpiSingleNodeStoreEndpoint(const env::Map* from) {
  if (!env::kOmpiSize.IsSet(from) || !env::kOmpiJobId.IsSet(from)) return std::nullopt;
  if (env::kOmpiLocalSize.Int(-1, from) != env::kOmpiSize.Int(0, from)) return std::nullopt;
  // Below Linux's ephemeral range (32768..), so outgoing connections never hold the port.
  const int64_t job = env::kOmpiJobId.Int(0, from);
  return fmt::format("127.0.0.1:{}", 20000 + static_cast<int>(job % 12768));
}

StoreEnv ReadStoreEnv() {
  StoreEnv out;
  out.token = env::kToken.Str("");
  const double seconds = env::kStoreTimeout.Seconds(60.0);
  out.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
  if (auto store = env::kStore.Get()) {
    std::string endpoint;
    const StoreBackend& backend = BackendOfAddress(*store, &endpoint);
    out.address = backend.scheme + net::ParseHostPort(endpoint, env::kStore.name()).ToString();
    return out;
  }
  const auto addr = env::kMasterAddr.Get();
  const auto port = env::kMasterPort.Get();
  if (!addr && !port) {
    if (auto mpi = MpiSingleNodeStoreEndpoint()) {
      const auto hp = net::ParseHostPort(*mpi, "the store derived from the mpirun job id");
      out.address = hp.ToString();
      out.host_server = env::kOmpiRank.Int(-1) == 0;
      out.host_port = hp.port;
      return out;
    }
    throw InvalidArgument(
        "no rendezvous store: set COHORT_STORE=host:port (of `cohort store` or the launcher on "
        "node 0), or MASTER_ADDR and MASTER_PORT to have rank 0 host one; `cohort launch` sets "
        "these for you (a single-node mpirun needs none)");
  }
  if (!addr || !port) {
    throw InvalidArgument(fmt::format("{} is set but {} is not; set both (torchrun convention)",
                                      addr ? "MASTER_ADDR" : "MASTER_PORT",
                                      addr ? "MASTER_PORT" : "MASTER_ADDR"));
  }
  const auto hp = net::ParseHostPort(*addr + ":" + *port, "MASTER_ADDR:MASTER_PORT");
  out.address = hp.ToString();
  const int64_t rank = RankFromEnv();
  if (rank < 0) {
    throw InvalidArgument(
        "MASTER_ADDR/MASTER_PORT are set but no rank is: set COHORT_RANK (or RANK) so that rank "
        "0 knows to host the store");
  }
  out.host_server = rank == 0;
  out.host_port = hp.port;
  return out;
}

std::shared_ptr<Store> HostStore(const std::string& host, int port, const std::string& token,
                                 std::chrono::milliseconds connect_timeout, int* bound_port) {
  auto server = std::make_unique<GrpcStoreServer>(host, port, token);
  server->Start();
  if (bound_port) *bound_port = server->Port();
  auto client = std::make_unique<GrpcStoreClient>(
      net::HostPort{"127.0.0.1", server->Port()}.ToString(), token, connect_timeout);
  client->Connect();
  return std::make_shared<HostedStore>(std::move(server), std::move(client));
}

std::shared_ptr<Store> ConnectStoreFromEnv() {
  const StoreEnv e = ReadStoreEnv();
  if (!e.host_server) {
    std::string endpoint;
    const StoreBackend& backend = BackendOfAddress(e.address, &endpoint);
    return backend.connect({endpoint, e.token, env::kRunId.Str(""), e.connect_timeout});
  }
  // Listen on every interface where the other ranks reach this host by its address: then only
  // with a token (no open doors), unless asked for on a trusted network.
  const bool loopback = net::IsLoopback(net::ParseHostPort(e.address, "the store").host);
  if (!loopback && e.token.empty() && env::kInsecureStore.Str("") != "1") {
    throw InvalidArgument(fmt::format(
        "rank 0 would host the rendezvous store at {} on every interface without COHORT_TOKEN, "
        "so anyone on the network could read and write it; set the same secret on every rank "
        "(export COHORT_TOKEN=$(openssl rand -hex 16)), or COHORT_INSECURE_STORE=1 on a trusted "
        "network",
        e.address));
  }
  auto store = HostStore(loopback ? "127.0.0.1" : "0.0.0.0", e.host_port, e.token,
                         e.connect_timeout, nullptr);
  COHORT_INFO(kStore, "rank 0 hosts the store on port {}; the others connect to {}", e.host_port,
              e.address);
  return store;
}

}  // namespace cohort::collectives
