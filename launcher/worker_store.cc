#include "launcher/worker_store.h"

#include <fmt/format.h>

#include <chrono>

#include "collectives/store/store_backends.h"
#include "collectives/store/store_from_env.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/net.h"

namespace cohort::launcher {
namespace {

// What node 0 publishes: "host:port token", or "!why" when it could not start the store.
constexpr const char* kKey = "workers-store";

}  // namespace

WorkerStore OpenWorkerStore(collectives::Store& launch, const LaunchPlan& plan, const Assignment& a,
                            const std::string& prefix) {
  WorkerStore w;
  w.host = a.member_hosts.empty() ? "node 0" : fmt::format("node 0 ({})", a.member_hosts.front());
  if (a.node_rank == 0) {
    // A token of the round's own when the job has none: the workers' store never opens to
    // anyone who can reach the port (only the launchers' store, which may need credentials,
    // tells it).
    w.token = plan.token.empty() ? RandomHex(16) : plan.token;
    try {
      int port = 0;
      w.store = collectives::HostStore(plan.bind_host, 0, w.token, RdzvTimeout(plan), &port);
      w.address = net::HostPort{a.master_addr, port}.ToString();
    } catch (const Error& e) {
      launch.Set(prefix + kKey, "!" + std::string(e.what()));
      throw;
    }
    launch.Set(prefix + kKey, w.address + " " + w.token);
    return w;
  }
  const std::string value = launch.Get(prefix + kKey, RdzvTimeout(plan));
  if (!value.empty() && value[0] == '!') {
    throw Unavailable(
        fmt::format("{} could not start the workers' store: {}", w.host, value.substr(1)));
  }
  const auto space = value.find(' ');
  w.address = value.substr(0, space);
  w.token = space == std::string::npos ? "" : value.substr(space + 1);
  w.store = collectives::FindStoreBackend("grpc").connect(
      {w.address, w.token, plan.run_id.value, RdzvTimeout(plan)});
  return w;
}

}  // namespace cohort::launcher
