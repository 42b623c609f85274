#include "launcher/platform.h"

#include <fmt/format.h>
#include <netdb.h>

#include "collectives/store/store_from_env.h"
#include "common/error.h"
#include "common/net.h"
#include "launcher/launch_plan.h"

namespace cohort::launcher {
namespace {

constexpr int kDefaultRdzvPort = 29500;

PartialWorld Named(const std::string& platform) {
  PartialWorld w;
  w.platform = platform;
  return w;
}

// The variable's value as a Found named after it; nullopt when unset or empty.
std::optional<Found> FromVar(const env::Var& var, const env::Map& env, std::string source = "") {
  auto v = var.Get(&env);
  if (!v) return std::nullopt;
  return Found{*v, var.name(), source.empty() ? var.name() : std::move(source)};
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

// A Kubernetes Indexed Job (examples/k8s/indexed-job.yaml): JOB_COMPLETION_INDEX is the node
// rank, and pod 0's DNS name (hostname and subdomain) is node 0's address.
class IndexedJob : public PlatformDetector {
 public:
  std::string Name() const override { return "Kubernetes Indexed Job"; }
  std::optional<PartialWorld> Detect(const env::Map& env) const override {
    if (!env::kJobCompletionIndex.IsSet(&env)) return std::nullopt;
    PartialWorld w = Named(Name());
    w.node_rank = FromVar(env::kJobCompletionIndex, env);
    w.derive_endpoint = [](const LaunchPlan& p) -> std::optional<Found> {
      const std::string zero = IndexedJobNodeZero(p.node_rank.value);
      if (zero.empty()) {
        throw InvalidArgument(
            "in an Indexed Job, node 0's address comes from the pod's hostname and subdomain, "
            "and this pod has none; set COHORT_RDZV_ENDPOINT=<job>-0.<service>:29500 (see "
            "examples/k8s/indexed-job.yaml)");
      }
      return Found{fmt::format("{}:{}", zero, kDefaultRdzvPort), "",
                   "hostname of Indexed Job pod 0"};
    };
    return w;
  }
};

// A Kubeflow PyTorchJob: the operator sets PET_NNODES and PET_NPROC_PER_NODE (torchrun's
// arguments), RANK to the node rank, WORLD_SIZE to every process, MASTER_ADDR/MASTER_PORT.
class PyTorchJob : public PlatformDetector {
 public:
  std::string Name() const override { return "Kubeflow PyTorchJob"; }
  std::optional<PartialWorld> Detect(const env::Map& env) const override {
    if (!env::kPetNNodes.IsSet(&env) && !env::kPetNprocPerNode.IsSet(&env)) return std::nullopt;
    PartialWorld w = Named(Name());
    w.nproc_per_node = FromVar(env::kPetNprocPerNode, env);
    w.nnodes = FromVar(env::kPetNNodes, env);
    w.node_rank = FromVar(env::kTorchRank, env, "RANK (a PyTorchJob's node rank)");
    w.world_size = FromVar(env::kTorchWorldSize, env);
    return w;
  }
};

// mpirun or an MPIJob: one launcher per MPI process, each starting one worker that inherits the
// MPI environment; with every rank on this node, the store's port comes from the job id.
class Mpirun : public PlatformDetector {
 public:
  std::string Name() const override { return "mpirun"; }
  std::optional<PartialWorld> Detect(const env::Map& env) const override {
    if (!env::kOmpiSize.IsSet(&env)) return std::nullopt;
    PartialWorld w = Named(Name());
    w.mpi_passthrough = true;
    w.nproc_per_node = Found{"1", "", "mpirun: one worker per MPI process"};
    const std::string per_process = "OMPI_COMM_WORLD_SIZE (one launcher per MPI process)";
    w.nnodes = Found{*env::kOmpiSize.Get(&env), per_process, per_process};
    w.node_rank = FromVar(env::kOmpiRank, env);
    w.derive_endpoint = [env](const LaunchPlan&) -> std::optional<Found> {
      auto mpi = collectives::MpiSingleNodeStoreEndpoint(&env);
      if (!mpi) return std::nullopt;
      return Found{*mpi, "", "mpirun job id (all ranks on this node)"};
    };
    return w;
  }
};

// Slurm (srun or sbatch): SLURM_NNODES nodes, SLURM_NODEID this one; node 0 is the first host of
// SLURM_JOB_NODELIST, as torchrun users on Slurm pass it.
class Slurm : public PlatformDetector {
 public:
  std::string Name() const override { return "Slurm"; }
  std::optional<PartialWorld> Detect(const env::Map& env) const override {
    if (!env::kSlurmNTasks.IsSet(&env)) return std::nullopt;
    PartialWorld w = Named(Name());
    w.nnodes = FromVar(env::kSlurmNNodes, env);
    w.node_rank = FromVar(env::kSlurmNodeId, env);
    const std::string first = FirstSlurmHost(env::kSlurmJobNodelist.Str("", &env));
    w.derive_endpoint = [first](const LaunchPlan& p) -> std::optional<Found> {
      if (first.empty() || p.max_nodes.value == 1) return std::nullopt;  // one node: loopback
      return Found{fmt::format("{}:{}", first, kDefaultRdzvPort), "",
                   "first host of SLURM_JOB_NODELIST"};
    };
    return w;
  }
};

// A laptop or a single machine: nothing in the environment, the defaults decide.
class SingleNode : public PlatformDetector {
 public:
  std::string Name() const override { return "single node"; }
  std::optional<PartialWorld> Detect(const env::Map&) const override { return Named(Name()); }
};

}  // namespace

const std::vector<const PlatformDetector*>& PlatformDetectors() {
  static const IndexedJob indexed_job;
  static const PyTorchJob pytorch_job;
  static const Mpirun mpirun;
  static const Slurm slurm;
  static const SingleNode single_node;
  static const std::vector<const PlatformDetector*> all = {&indexed_job, &pytorch_job, &mpirun,
                                                           &slurm, &single_node};
  return all;
}

PartialWorld DetectPlatform(const env::Map& env) {
  for (const PlatformDetector* d : PlatformDetectors()) {
    if (auto w = d->Detect(env)) return *w;
  }
  return Named("single node");  // unreachable: SingleNode detects everything
}

PartialWorld ExplicitWorld(const env::Map& env) {
  PartialWorld w;
  w.nproc_per_node = FromVar(env::kNprocPerNode, env);
  if (w.nproc_per_node) w.nproc_per_node->auto_ok = true;
  w.nnodes = FromVar(env::kNNodes, env);
  w.node_rank = FromVar(env::kNodeRank, env);
  w.endpoint = FromVar(env::kRdzvEndpoint, env);
  auto addr = env::kMasterAddr.Get(&env);
  auto port = env::kMasterPort.Get(&env);
  if (!w.endpoint && addr && port) {
    w.endpoint = Found{*addr + ":" + *port, "MASTER_ADDR:MASTER_PORT", "MASTER_ADDR:MASTER_PORT"};
  }
  return w;
}

std::string FirstSlurmHost(const std::string& nodelist) {
  // Ranges are in brackets ("n[1-4,7]"); a comma outside them ends the first host.
  std::string host;
  for (size_t i = 0; i < nodelist.size() && nodelist[i] != ','; ++i) {
    if (nodelist[i] != '[') {
      host += nodelist[i];
      continue;
    }
    const size_t close = nodelist.find(']', i);
    if (close == std::string::npos) return "";  // malformed: no host to name
    const std::string range = nodelist.substr(i + 1, close - i - 1);
    host += range.substr(0, range.find_first_of(",-"));
    i = close;
  }
  return host;
}

}  // namespace cohort::launcher
