// The launch platforms `cohort launch` recognizes from its environment: each is one detector
// that reads an environment and says what it knows of the world (nodes, this node's rank,
// workers per node, node 0's address), with where each value came from. The planner
// (launch_plan.h) takes each value from the first layer that has it: the flags, then
// ExplicitWorld (COHORT_* and torchrun's MASTER_ADDR/MASTER_PORT), then the platform, then its
// defaults.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/env.h"

namespace cohort::launcher {

struct LaunchPlan;

// One value as a layer found it.
struct Found {
  std::string text;      // as written: "4", "2:4", "host:port"
  std::string var;       // what a parse error names: "PET_NNODES", "--nnodes"
  std::string source;    // what --dry-run shows: "RANK (a PyTorchJob's node rank)"
  bool auto_ok = false;  // nproc-per-node: whether "auto" (a worker per GPU or core) is allowed
};

// What one layer says about the world; an absent value is left to the next layer.
struct PartialWorld {
  std::string platform;                 // "Kubernetes Indexed Job"; "" for a layer above them
  std::optional<Found> nproc_per_node;  // "N" (or "auto" when auto_ok)
  std::optional<Found> nnodes;          // "N" or "MIN:MAX"
  std::optional<Found> node_rank;
  std::optional<Found> endpoint;  // node 0's host:port
  // Node 0's host:port when no layer above names one, asked only then (it may ask DNS), with the
  // plan's counts and node rank filled in. nullopt: left to the defaults. Throws
  // InvalidArgument when this platform should name node 0 and cannot.
  std::function<std::optional<Found>(const LaunchPlan&)> derive_endpoint;
  std::optional<Found> world_size;  // processes in the job: must be nnodes x nproc-per-node
  // Each launcher starts one worker, which inherits the MPI environment (mpirun).
  bool mpi_passthrough = false;
};

class PlatformDetector {
 public:
  virtual ~PlatformDetector() = default;
  // "Kubernetes Indexed Job", "Kubeflow PyTorchJob", "mpirun", "Slurm", "single node".
  virtual std::string Name() const = 0;
  // The world `env` describes when it is this platform's, else nullopt. Values are checked
  // (parsed) by the planner, and only when used.
  virtual std::optional<PartialWorld> Detect(const env::Map& env) const = 0;
};

// Every platform in the order they are tried; the last, "single node", detects any
// environment.
const std::vector<const PlatformDetector*>& PlatformDetectors();

// The first platform of PlatformDetectors() that detects `env` (platform names it).
PartialWorld DetectPlatform(const env::Map& env);

// The layer above every platform: COHORT_NPROC_PER_NODE, COHORT_NNODES, COHORT_NODE_RANK,
// COHORT_RDZV_ENDPOINT, then MASTER_ADDR:MASTER_PORT (torchrun's convention, which PyTorchJob
// and Slurm users set). platform is empty.
PartialWorld ExplicitWorld(const env::Map& env);

// The first host of a Slurm node list: "gpu[003-008,010],cpu1" -> "gpu003". "" when empty.
std::string FirstSlurmHost(const std::string& nodelist);

}  // namespace cohort::launcher
