#include "launcher/launch_plan.h"

#include <fmt/format.h>
#include <netdb.h>
#include <unistd.h>

#include <thread>

#include "collectives/config.h"
#include "collectives/registry.h"
#include "collectives/store/store_backends.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/net.h"

#if COHORT_HAVE_NCCL
#include "collectives/nccl/cuda_device.h"
#endif

namespace cohort::launcher {
namespace {

constexpr int kDefaultRdzvPort = 29500;

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

int EnvCount(const env::Var& var, int min) { return ParseCount(*var.Get(), var.name(), min); }

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

// In an Indexed Job whose pods set `subdomain`, pod i is "<job>-<i>.<service>.<ns>.svc...":
// node 0 is the same name with index 0.
std::string IndexedJobNodeZero(int index) {
  const std::string host = net::Hostname();
  const std::string suffix = "-" + std::to_string(index);
  if (host.size() <= suffix.size() ||
      host.compare(host.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return "";
  }
  std::string domain;
  addrinfo hints{};
  hints.ai_flags = AI_CANONNAME;
  addrinfo* info = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &info) == 0 && info && info->ai_canonname) {
    std::string fqdn = info->ai_canonname;
    if (fqdn.rfind(host + ".", 0) == 0) domain = fqdn.substr(host.size());
  }
  if (info) freeaddrinfo(info);
  if (domain.empty()) return "";  // no subdomain: node 0 cannot be named
  return host.substr(0, host.size() - suffix.size()) + "-0" + domain;
}

void DeriveCounts(const LaunchOptions& o, LaunchPlan& p) {
  // Workers per node.
  if (!o.nproc_per_node.empty() || env::kNprocPerNode.IsSet()) {
    const bool flag = !o.nproc_per_node.empty();
    const std::string text = flag ? o.nproc_per_node : *env::kNprocPerNode.Get();
    const std::string src = flag ? "--nproc-per-node" : env::kNprocPerNode.name();
    if (text == "auto") {
      std::string why;
      p.nproc_per_node = {AutoProcs(&why), src + " (" + why + ")"};
    } else {
      p.nproc_per_node = {ParseCount(text, src, 1), src};
    }
  } else if (p.platform == "Kubeflow PyTorchJob" && env::kPetNprocPerNode.IsSet()) {
    p.nproc_per_node = {EnvCount(env::kPetNprocPerNode, 1), env::kPetNprocPerNode.name()};
  } else {
    p.nproc_per_node = {1,
                        p.platform == "mpirun" ? "mpirun: one worker per MPI process" : "default"};
  }

  // Nodes: N or MIN:MAX.
  std::string nnodes;
  std::string src;
  if (!o.nnodes.empty()) {
    nnodes = o.nnodes, src = "--nnodes";
  } else if (env::kNNodes.IsSet()) {
    nnodes = *env::kNNodes.Get(), src = env::kNNodes.name();
  } else if (p.platform == "Kubeflow PyTorchJob" && env::kPetNNodes.IsSet()) {
    nnodes = *env::kPetNNodes.Get(), src = env::kPetNNodes.name();
  } else if (p.platform == "mpirun") {
    nnodes = *env::kOmpiSize.Get(), src = "OMPI_COMM_WORLD_SIZE (one launcher per MPI process)";
  } else if (p.platform == "Slurm" && env::kSlurmNNodes.IsSet()) {
    nnodes = *env::kSlurmNNodes.Get(), src = env::kSlurmNNodes.name();
  } else {
    nnodes = "1", src = "default";
  }
  auto colon = nnodes.find(':');
  if (colon == std::string::npos) {
    int n = ParseCount(nnodes, src, 1);
    p.min_nodes = p.max_nodes = {n, src};
  } else {
    p.min_nodes = {ParseCount(nnodes.substr(0, colon), src + " (MIN)", 1), src};
    p.max_nodes = {ParseCount(nnodes.substr(colon + 1), src + " (MAX)", 1), src};
    if (p.min_nodes.value > p.max_nodes.value) {
      throw InvalidArgument(
          fmt::format("{}='{}': MIN is above MAX; write it as MIN:MAX, e.g. 2:4", src, nnodes));
    }
  }

  // This node's rank, when something fixes it.
  if (o.node_rank >= 0) {
    p.node_rank = {o.node_rank, "--node-rank"};
  } else if (env::kNodeRank.IsSet()) {
    p.node_rank = {EnvCount(env::kNodeRank, 0), env::kNodeRank.name()};
  } else if (p.platform == "Kubernetes Indexed Job") {
    p.node_rank = {EnvCount(env::kJobCompletionIndex, 0), env::kJobCompletionIndex.name()};
  } else if (p.platform == "Kubeflow PyTorchJob") {
    p.node_rank = {EnvCount(env::kTorchRank, 0), "RANK (a PyTorchJob's node rank)"};
  } else if (p.platform == "mpirun") {
    p.node_rank = {EnvCount(env::kOmpiRank, 0), env::kOmpiRank.name()};
  } else if (p.platform == "Slurm" && env::kSlurmNodeId.IsSet()) {
    p.node_rank = {EnvCount(env::kSlurmNodeId, 0), env::kSlurmNodeId.name()};
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
  if (p.platform == "Kubeflow PyTorchJob" && env::kTorchWorldSize.IsSet()) {
    const int world = EnvCount(env::kTorchWorldSize, 1);
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
  throw InvalidArgument(fmt::format("{}='{}' is not a backend of this build; use auto or one of: {}",
                                    backend.source, backend.value, collectives::BackendNames()));
}

void DeriveEndpoint(const LaunchOptions& o, LaunchPlan& p) {
  if (!o.rdzv_endpoint.empty()) {
    p.endpoint = {o.rdzv_endpoint, "--rdzv-endpoint"};
  } else if (env::kRdzvEndpoint.IsSet()) {
    p.endpoint = {*env::kRdzvEndpoint.Get(), env::kRdzvEndpoint.name()};
  } else if (env::kMasterAddr.IsSet() && env::kMasterPort.IsSet()) {
    p.endpoint = {*env::kMasterAddr.Get() + ":" + *env::kMasterPort.Get(),
                  "MASTER_ADDR:MASTER_PORT"};
  } else if (p.platform == "Kubernetes Indexed Job") {
    std::string zero = IndexedJobNodeZero(p.node_rank.value);
    if (zero.empty()) {
      throw InvalidArgument(
          "in an Indexed Job, node 0's address comes from the pod's hostname and subdomain, and "
          "this pod has none; set COHORT_RDZV_ENDPOINT=<job>-0.<service>:29500 (see "
          "examples/k8s/indexed-job.yaml)");
    }
    p.endpoint = {fmt::format("{}:{}", zero, kDefaultRdzvPort), "hostname of Indexed Job pod 0"};
  } else if (auto mpi = collectives::MpiSingleNodeStoreEndpoint()) {
    p.endpoint = {*mpi, "mpirun job id (all ranks on this node)"};
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

OpenDoor FindOpenDoor(const LaunchPlan& p) {
  const bool etcd = p.rdzv_backend == "etcd";
  if (etcd && !(env::kRdzvUser.IsSet() && env::kRdzvPassword.IsSet())) {
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
  if (p.ps_servers.value > 0) {
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
void CheckOpenDoors(const LaunchOptions& o, LaunchPlan& p, bool alone) {
  const std::string host = net::ParseHostPort(p.endpoint.value, p.endpoint.source, true).host;
  const bool reachable = !alone && !net::IsLoopback(host);
  p.bind_host = !reachable ? (host == "localhost" || alone ? "127.0.0.1" : host) : "0.0.0.0";
  if (!reachable) return;
  const OpenDoor door = FindOpenDoor(p);
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

}  // namespace

LaunchPlan MakePlan(const LaunchOptions& o) {
  LaunchPlan p;
  if (env::kJobCompletionIndex.IsSet()) {
    p.platform = "Kubernetes Indexed Job";
  } else if (env::kPetNNodes.IsSet() || env::kPetNprocPerNode.IsSet()) {
    p.platform = "Kubeflow PyTorchJob";
  } else if (env::kOmpiSize.IsSet()) {
    p.platform = "mpirun";
    p.mpi_passthrough = true;
  } else if (env::kSlurmNTasks.IsSet()) {
    p.platform = "Slurm";
  } else {
    p.platform = "single node";
  }
  DeriveCounts(o, p);
  if (p.mpi_passthrough && p.nproc_per_node.value != 1) {
    throw InvalidArgument(fmt::format(
        "under mpirun each launcher starts exactly one worker (mpirun -np sets the world); drop "
        "--nproc-per-node {} or run the launcher without mpirun",
        p.nproc_per_node.value));
  }
  DeriveEndpoint(o, p);

  auto pick = [](const std::string& flag, const char* flag_name, const env::Var& var,
                 const std::string& fallback, const char* fallback_src) -> Sourced<std::string> {
    if (!flag.empty()) return {flag, flag_name};
    if (auto v = var.Get()) return {*v, var.name()};
    return {fallback, fallback_src};
  };
  const bool alone = p.max_nodes.value == 1 && !p.mpi_passthrough;
  p.run_id = pick(o.run_id, "--run-id", env::kRunId, alone ? "local-" + RandomHex(4) : "default",
                  alone ? "fresh (single node)" : "default: give every job its own");
  p.backend = pick(o.backend, "--backend", env::kBackend, "", "the workers' default (auto)");
  p.checkpoint_uri = pick(o.checkpoint_uri, "--checkpoint-uri", env::kCheckpointUri, "", "none");
  p.resume = pick(o.resume, "--resume", env::kResume, "", "none");
  CheckBackend(p.backend);
  p.rdzv_backend = collectives::FindStoreBackend(o.rdzv_backend).name;
  p.ps_servers = {o.ps_servers, o.ps_servers > 0 ? "--ps-servers" : "default"};
  if (p.backend.value == "ps" && p.ps_servers.value == 0 && !env::kPsServers.IsSet()) {
    throw InvalidArgument(fmt::format(
        "{}=ps needs parameter servers: add --ps-servers N (node 0 runs them), or set "
        "COHORT_PS_SERVERS to running `cohort ps-server` shards",
        p.backend.source));
  }
  if (o.max_restarts >= 0) {
    p.max_restarts = {o.max_restarts, "--max-restarts"};
  } else if (env::kMaxRestarts.IsSet()) {
    p.max_restarts = {EnvCount(env::kMaxRestarts, 0), env::kMaxRestarts.name()};
  } else {
    p.max_restarts = {0, "default"};
  }
  if (o.heartbeat_timeout >= 0) {
    p.heartbeat_timeout = {o.heartbeat_timeout, "--heartbeat-timeout"};
  } else {
    p.heartbeat_timeout = {env::kHeartbeatTimeout.Seconds(300), env::kHeartbeatTimeout.IsSet()
                                                                    ? env::kHeartbeatTimeout.name()
                                                                    : "default"};
  }
  p.token = env::kToken.Str(alone ? RandomHex(16) : "");
  CheckOpenDoors(o, p, alone);
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
  line("ps-servers", std::to_string(p.ps_servers.value), p.ps_servers.source);
  line("max-restarts", std::to_string(p.max_restarts.value), p.max_restarts.source);
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
       env::kToken.IsSet()           ? "COHORT_TOKEN"
       : !p.token.empty()            ? "fresh (single node)"
       : p.open_door_warning.empty() ? "none needed: the store listens on " + p.bind_host
                                     : "--insecure-store");
  line("listens on", p.bind_host,
       p.bind_host == "0.0.0.0" ? "other nodes reach node 0" : "loopback: nodes on this machine");
  return s;
}

std::string TokenAdvice() {
  return "set the same secret on every node (export COHORT_TOKEN=$(openssl rand -hex 16), or from "
         "a Kubernetes Secret as examples/k8s does)";
}

}  // namespace cohort::launcher
