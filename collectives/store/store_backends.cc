#include "collectives/store/store_backends.h"

#include <fmt/format.h>

#include "collectives/store/etcd_store.h"
#include "collectives/store/grpc_store_client.h"
#include "common/env.h"
#include "common/error.h"

namespace cohort::collectives {

const std::vector<StoreBackend>& StoreBackends() {
  static const std::vector<StoreBackend> backends = {
      {"grpc", "", true, "cohort's gRPC store, hosted by node 0's launcher (default)",
       [](const StoreConnectParams& p) -> std::shared_ptr<Store> {
         auto client = std::make_shared<GrpcStoreClient>(p.endpoint, p.token, p.timeout);
         client->Connect();
         return client;
       }},
      {"etcd", "etcd://", false, "an etcd v3 server at --rdzv-endpoint (keys under cohort/<run>/)",
       [](const StoreConnectParams& p) -> std::shared_ptr<Store> {
         // Credentials come from the environment, in the launcher and in every worker alike.
         EtcdCredentials credentials{env::kRdzvUser.Str(""), env::kRdzvPassword.Str("")};
         auto store = std::make_shared<EtcdStore>(p.endpoint, EtcdStore::KeyPrefix(p.run_id),
                                                  std::move(credentials));
         store->Connect(p.timeout);
         return store;
       }},
  };
  return backends;
}

std::string StoreBackendNames() {
  std::string names;
  for (const auto& b : StoreBackends()) names += (names.empty() ? "" : ", ") + b.name;
  return names;
}

const StoreBackend& FindStoreBackend(const std::string& name) {
  if (name.empty()) return StoreBackends().front();
  for (const auto& b : StoreBackends()) {
    if (b.name == name) return b;
  }
  throw InvalidArgument(fmt::format("unknown rendezvous backend '{}': use one of {}", name,
                                    StoreBackendNames()));
}

const StoreBackend& BackendOfAddress(const std::string& address, std::string* endpoint) {
  for (const auto& b : StoreBackends()) {
    if (!b.scheme.empty() && address.rfind(b.scheme, 0) == 0) {
      *endpoint = address.substr(b.scheme.size());
      return b;
    }
  }
  *endpoint = address;
  return StoreBackends().front();
}

}  // namespace cohort::collectives
