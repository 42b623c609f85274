#include "launcher/launch_plan.h"

#include <fmt/format.h>
#include <unistd.h>

#include <thread>

#include "collectives/config.h"
#include "collectives/registry.h"
#include "collectives/store/store_backends.h"
#include "common/env.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/net.h"
#include "launcher/platform.h"

#if COHORT_HAVE_NCCL
#include "collectives/nccl/cuda_device.h"
#endif

namespace cohort::launcher {
namespace {

int ParseCount(const std::string& text, const std::string& what, int min) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(text, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < min) {
    throw InvalidArgument(fmt::format("{}='{}' must be an integer >= {}", what, text, min));
  }
  return v;
}

// "auto": one worker per GPU, else one per CPU core (torchrun's rule).
int AutoProcs(std::string* why) {
#if COHORT_HAVE_NCCL
  std::string no_gpu;
  int gpus = collectives::CudaDeviceCount(&no_gpu);
  if (gpus > 0) {
    *why = fmt::format("auto: {} GPUs", gpus);
    return gpus;
  }
#endif
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  *why = fmt::format("auto: no GPU, {} CPU cores", cores);
  return cores;
}

bool IsLocalHost(const std::string& host) {
  return net::IsLoopback(host) || host == net::Hostname();
}

// The layers a value is taken from, first to last: the flags, COHORT_* (and MASTER_*), the
// platform's environment.
struct Layers {
  PartialWorld flags;
  PartialWorld explicit_env;
  PartialWorld platform;

  std::optional<Found> First(std::optional<Found> PartialWorld::*field) const {
    for (const PartialWorld* w : {&flags, &explicit_env, &platform}) {
      if (w->*field) return w->*field;
    }
    return std::nullopt;
  }
};

Found Flag(const std::string& text, const char* name) { return Found{text, name, name, false}; }

PartialWorld FlagWorld(const LaunchOptions& o) {
  PartialWorld w;
  if (!o.nproc_per_node.empty()) {
    w.nproc_per_node = Flag(o.nproc_per_node, "--nproc-per-node");
    w.nproc_per_node->auto_ok = true;
  }
  if (!o.nnodes.empty()) w.nnodes = Flag(o.nnodes, "--nnodes");
  if (o.node_rank >= 0) w.node_rank = Flag(std::to_string(o.node_rank), "--node-rank");
  if (!o.rdzv_endpoint.empty()) w.endpoint = Flag(o.rdzv_endpoint, "--rdzv-endpoint");
  return w;
}

void DeriveNodes(const Layers& layers, LaunchPlan& p) {
  const Found nnodes =
      layers.First(&PartialWorld::nnodes).value_or(Found{"1", "default", "default", false});
  const std::string& src = nnodes.var;
  auto colon = nnodes.text.find(':');
  if (colon == std::string::npos) {
    int n = ParseCount(nnodes.text, src, 1);
    p.min_nodes = p.max_nodes = {n, nnodes.source};
  } else {
    p.min_nodes = {ParseCount(nnodes.text.substr(0, colon), src + " (MIN)", 1), nnodes.source};
    p.max_nodes = {ParseCount(nnodes.text.substr(colon + 1), src + " (MAX)", 1), nnodes.source};
    if (p.min_nodes.value > p.max_nodes.value) {
      throw InvalidArgument(fmt::format("{}='{}': MIN is above MAX; write it as MIN:MAX, e.g. 2:4",
                                        src, nnodes.text));
    }
  }
}

void DeriveCounts(const Layers& layers, LaunchPlan& p) {
  // Workers per node.
  if (auto n = layers.First(&PartialWorld::nproc_per_node)) {
    if (n->auto_ok && n->text == "auto") {
      std::string why;
      p.nproc_per_node = {AutoProcs(&why), n->source + " (" + why + ")"};
    } else {
      p.nproc_per_node = {ParseCount(n->text, n->var, 1), n->source};
    }
  } else {
    p.nproc_per_node = {1, "default"};
  }
  DeriveNodes(layers, p);

  // This node's rank, when something fixes it.
  if (auto r = layers.First(&PartialWorld::node_rank)) {
    p.node_rank = {ParseCount(r->text, r->var, 0), r->source};
  } else if (p.max_nodes.value == 1) {
    p.node_rank = {0, "the only node"};
  } else {
    p.node_rank = {-1, "order of arrival at the rendezvous"};
  }
  if (p.node_rank.value >= p.max_nodes.value) {
    throw InvalidArgument(fmt::format(
        "node rank {} (from {}) is outside a job of {} nodes; node "
        "ranks run from 0 to {}",
        p.node_rank.value, p.node_rank.source, p.max_nodes.value, p.max_nodes.value - 1));
  }
  if (auto w = layers.First(&PartialWorld::world_size)) {
    const int world = ParseCount(w->text, w->var, 1);
    if (world != p.max_nodes.value * p.nproc_per_node.value) {
      throw InvalidArgument(fmt::format(
          "WORLD_SIZE={} but {} nodes x {} workers per node = {}; in a PyTorchJob WORLD_SIZE "
          "counts every process: check nprocPerNode and the replica counts",
          world, p.max_nodes.value, p.nproc_per_node.value,
          p.max_nodes.value * p.nproc_per_node.value));
    }
  }
}

// The backends this build can create come from the collectives registry, so the launcher never
// accepts one that every worker would then refuse.
void CheckBackend(const Sourced<std::string>& backend) {
  if (backend.value.empty() || backend.value == "auto") return;
  for (const auto& b : collectives::Backends()) {
    if (backend.value == b.name) return;
  }
  throw InvalidArgument(
      fmt::format("{}='{}' is not a backend of this build; use auto or one of: {}", backend.source,
                  backend.value, collectives::BackendNames()));
}

void DeriveEndpoint(const Layers& layers, LaunchPlan& p) {
  std::optional<Found> found = layers.First(&PartialWorld::endpoint);
  if (!found && layers.platform.derive_endpoint) found = layers.platform.derive_endpoint(p);
  if (found) {
    p.endpoint = {found->text, found->source};
  } else if (p.max_nodes.value == 1) {
    p.endpoint = {"127.0.0.1:0", "a free port on this node"};
  } else {
    throw InvalidArgument(fmt::format(
        "{} nodes need a rendezvous endpoint: pass --rdzv-endpoint HOST:PORT (node 0's address), "
        "or set COHORT_RDZV_ENDPOINT or MASTER_ADDR and MASTER_PORT",
        p.max_nodes.value));
  }
  const net::HostPort hp = net::ParseHostPort(p.endpoint.value, p.endpoint.source, true);
  if (p.node_rank.value == 0) {
    p.host_store = {true, "node rank 0 hosts the store"};
  } else if (p.node_rank.value > 0) {
    p.host_store = {false, "node 0 hosts the store"};
  } else if (IsLocalHost(hp.host)) {
    p.host_store = {true, "the endpoint is this host: the first launcher to bind it hosts"};
  } else {
    p.host_store = {false, "the endpoint is another host"};
  }
}

// What a plan would leave open to other machines without a secret, as "what, so harm", and
// how to close it; both empty when nothing is.
struct OpenDoor {
  std::string what;
  std::string fix;
};

OpenDoor FindOpenDoor(const LaunchPlan& p, const env::Map& env) {
  const bool etcd = p.rdzv_backend == "etcd";
  if (etcd && !(env::kRdzvUser.IsSet(&env) && env::kRdzvPassword.IsSet(&env))) {
    return {fmt::format("no etcd credentials for the etcd at {}, which other machines reach, so "
                        "anyone on the network could read and write the job's rendezvous",
                        p.endpoint.value),
            fmt::format("set {} and {} to a user of that etcd (after etcd's auth enable)",
                        env::kRdzvUser.name(), env::kRdzvPassword.name())};
  }
  if (!p.token.empty()) return {};
  if (!etcd) {
    return {fmt::format("no {}, and the rendezvous store at {} would listen on every interface, so "
                        "anyone on the network could read and write it",
                        env::kToken.name(), p.endpoint.value),
            TokenAdvice()};
  }
  if (RunsPsServers(p)) {
    return {fmt::format("no {}, and the parameter servers would listen on every interface, so "
                        "anyone on the network could take part in the job's collectives",
                        env::kToken.name()),
            TokenAdvice()};
  }
  return {};
}

// No open doors by default: a store, an etcd or parameter servers that other machines can reach
// must ask for a secret, unless --insecure-store says the network is trusted. A single node and
// launchers meeting on a loopback endpoint listen on loopback only and need none.
void CheckOpenDoors(const LaunchOptions& o, const env::Map& env, LaunchPlan& p, bool alone) {
  const std::string host = net::ParseHostPort(p.endpoint.value, p.endpoint.source, true).host;
  const bool reachable = !alone && !net::IsLoopback(host);
  p.bind_host = !reachable ? (host == "localhost" || alone ? "127.0.0.1" : host) : "0.0.0.0";
  if (!reachable) return;
  const OpenDoor door = FindOpenDoor(p, env);
  if (door.what.empty()) return;
  if (o.insecure_store) {
    p.open_door_warning = "--insecure-store: " + door.what;
    return;
  }
  const std::string who = p.node_rank.value >= 0
                              ? fmt::format("node rank {} ({})", p.node_rank.value, net::Hostname())
                              : fmt::format("node {}", net::Hostname());
  throw InvalidArgument(fmt::format("{}: {}; {}, or pass --insecure-store on a trusted network",
                                    who, door.what, door.fix));
}

// What the job is, besides its world: run id, backend, snapshots, restarts, heartbeats.
void DeriveJob(const LaunchOptions& o, const env::Map& env, bool alone, LaunchPlan& p) {
  auto pick = [&env](const std::string& flag, const char* flag_name, const env::Var& var,
                     const std::string& fallback,
                     const char* fallback_src) -> Sourced<std::string> {
    if (!flag.empty()) return {flag, flag_name};
    if (auto v = var.Get(&env)) return {*v, var.name()};
    return {fallback, fallback_src};
  };
  p.run_id = pick(o.run_id, "--run-id", env::kRunId, alone ? "local-" + RandomHex(4) : "default",
                  alone ? "fresh (single node)" : "default: give every job its own");
  p.backend = pick(o.backend, "--backend", env::kBackend, "", "the workers' default (auto)");
  p.checkpoint_uri = pick(o.checkpoint_uri, "--checkpoint-uri", env::kCheckpointUri, "", "none");
  p.resume = pick(o.resume, "--resume", env::kResume, "", "none");
  CheckBackend(p.backend);
  p.rdzv_backend = collectives::FindStoreBackend(o.rdzv_backend).name;
  p.ps_servers = {o.ps_servers, o.ps_servers > 0 ? "--ps-servers" : "default"};
  p.ps_servers_per_node = {o.ps_servers_per_node,
                           o.ps_servers_per_node > 0 ? "--ps-servers-per-node" : "default"};
  if (o.ps_servers > 0 && o.ps_servers_per_node > 0) {
    throw InvalidArgument(
        "--ps-servers N (all on node 0) and --ps-servers-per-node N (on every node) exclude each "
        "other: give one");
  }
  if (p.backend.value == "ps" && !RunsPsServers(p) && !env::kPsServers.IsSet(&env)) {
    throw InvalidArgument(
        fmt::format("{}=ps needs parameter servers: add --ps-servers N (node 0 runs them) or "
                    "--ps-servers-per-node N, or set COHORT_PS_SERVERS to running `cohort "
                    "ps-server` shards",
                    p.backend.source));
  }
  if (o.max_restarts >= 0) {
    p.max_restarts = {o.max_restarts, "--max-restarts"};
  } else if (auto v = env::kMaxRestarts.Get(&env)) {
    p.max_restarts = {ParseCount(*v, env::kMaxRestarts.name(), 0), env::kMaxRestarts.name()};
  } else {
    p.max_restarts = {0, "default"};
  }
  if (auto v = env::kRestart.Get(&env)) {
    p.first_restart = {ParseCount(*v, env::kRestart.name(), 0), env::kRestart.name()};
  } else {
    p.first_restart = {0, "default"};
  }
  if (o.heartbeat_timeout >= 0) {
    p.heartbeat_timeout = {o.heartbeat_timeout, "--heartbeat-timeout"};
  } else {
    p.heartbeat_timeout = {
        env::kHeartbeatTimeout.Seconds(300, &env),
        env::kHeartbeatTimeout.IsSet(&env) ? env::kHeartbeatTimeout.name() : "default"};
  }
}

}  // namespace

LaunchPlan MakePlan(const LaunchOptions& o) { return MakePlan(o, env::Snapshot()); }

LaunchPlan MakePlan(const LaunchOptions& o, const env::Map& env) {
  const Layers layers{FlagWorld(o), ExplicitWorld(env), DetectPlatform(env)};
  LaunchPlan p;
  p.platform = layers.platform.platform;
  p.mpi_passthrough = layers.platform.mpi_passthrough;
  DeriveCounts(layers, p);
  if (p.mpi_passthrough && p.nproc_per_node.value != 1) {
    throw InvalidArgument(fmt::format(
        "under mpirun each launcher starts exactly one worker (mpirun -np sets the world); drop "
        "--nproc-per-node {} or run the launcher without mpirun",
        p.nproc_per_node.value));
  }
  DeriveEndpoint(layers, p);
  const bool alone = p.max_nodes.value == 1 && !p.mpi_passthrough;
  DeriveJob(o, env, alone, p);
  p.token_from_env = env::kToken.IsSet(&env);
  p.token = env::kToken.Str(alone ? RandomHex(16) : "", &env);
  CheckOpenDoors(o, env, p, alone);
  p.grace_period = o.grace_period;
  p.rdzv_timeout = o.rdzv_timeout;
  p.rdzv_last_call = o.rdzv_last_call;
  p.program = o.program;
  if (p.program.empty() && !o.dry_run) {
    throw InvalidArgument(
        "no program to run: write it after --, e.g. cohort launch "
        "--nproc-per-node 4 -- ./train --epochs 2");
  }
  return p;
}

std::string DescribePlan(const LaunchPlan& p) {
  std::string s = fmt::format("platform          {}\n", p.platform);
  auto line = [&](const char* name, const std::string& value, const std::string& source) {
    s += fmt::format("{:<17} {:<32} ({})\n", name, value, source);
  };
  line("nproc-per-node", std::to_string(p.nproc_per_node.value), p.nproc_per_node.source);
  line("nnodes",
       p.min_nodes.value == p.max_nodes.value
           ? std::to_string(p.max_nodes.value)
           : fmt::format("{}:{}", p.min_nodes.value, p.max_nodes.value),
       p.max_nodes.source);
  line("node-rank", p.node_rank.value < 0 ? "by arrival" : std::to_string(p.node_rank.value),
       p.node_rank.source);
  line("rdzv-endpoint", p.endpoint.value, p.endpoint.source);
  line("hosts the store", p.host_store.value ? "yes" : "no", p.host_store.source);
  line("run-id", p.run_id.value, p.run_id.source);
  line("backend", p.backend.value.empty() ? "auto" : p.backend.value, p.backend.source);
  if (p.ps_servers_per_node.value > 0) {
    line("ps-servers", fmt::format("{} per node", p.ps_servers_per_node.value),
         p.ps_servers_per_node.source);
  } else {
    line("ps-servers", std::to_string(p.ps_servers.value), p.ps_servers.source);
  }
  line("max-restarts", std::to_string(p.max_restarts.value), p.max_restarts.source);
  line("first restart", std::to_string(p.first_restart.value), p.first_restart.source);
  line("heartbeat-timeout",
       p.heartbeat_timeout.value > 0 ? fmt::format("{:g} s", p.heartbeat_timeout.value) : "off",
       p.heartbeat_timeout.source);
  line("checkpoint-uri", p.checkpoint_uri.value.empty() ? "-" : p.checkpoint_uri.value,
       p.checkpoint_uri.source);
  line("resume", p.resume.value.empty() ? "-" : p.resume.value, p.resume.source);
  line("token",
       !p.token.empty()              ? "set"
       : p.open_door_warning.empty() ? "none"
                                     : "none (store open to anyone who reaches it)",
       p.token_from_env              ? "COHORT_TOKEN"
       : !p.token.empty()            ? "fresh (single node)"
       : p.open_door_warning.empty() ? "none needed: the store listens on " + p.bind_host
                                     : "--insecure-store");
  line("listens on", p.bind_host,
       p.bind_host == "0.0.0.0" ? "other nodes reach node 0" : "loopback: nodes on this machine");
  return s;
}

std::chrono::milliseconds RdzvTimeout(const LaunchPlan& plan) {
  return std::chrono::milliseconds(static_cast<int64_t>(plan.rdzv_timeout * 1000));
}

bool HasRoundWorkerStore(const LaunchPlan& plan) {
  return !collectives::FindStoreBackend(plan.rdzv_backend).hosted_by_launcher;
}

bool RunsPsServers(const LaunchPlan& plan) {
  return plan.ps_servers.value > 0 || plan.ps_servers_per_node.value > 0;
}

std::string ServiceHost(const LaunchPlan& plan, bool hosts_store) {
  if (plan.max_nodes.value == 1) return "127.0.0.1";
  if (hosts_store) return net::ParseHostPort(plan.endpoint.value, plan.endpoint.source, true).host;
  if (plan.bind_host.empty() || plan.bind_host == "0.0.0.0") return net::Hostname();
  return plan.bind_host;
}

std::string TokenAdvice() {
  return "set the same secret on every node (export COHORT_TOKEN=$(openssl rand -hex 16), or from "
         "a Kubernetes Secret as examples/k8s does)";
}

}  // namespace cohort::launcher
