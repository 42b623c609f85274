// The environment each worker gets: the env contract (DESIGN.md) plus torchrun's names, on top
// of the launcher's own environment.
#pragma once

#include <string>
#include <vector>

#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"
#include "launcher/worker_group.h"

namespace cohort::launcher {

// Where this attempt's workers find the job's services.
struct WorkerServices {
  std::string store_address;  // COHORT_STORE: the workers' store as they reach it
  std::string store_token;    // COHORT_TOKEN, when not the plan's (a round's own workers' store)
  std::string ps_servers;     // COHORT_PS_SERVERS, when not empty
};

// One spec per local worker of this node for this attempt.
std::vector<WorkerSpec> MakeWorkerSpecs(const LaunchPlan& plan, const Assignment& assignment,
                                        int attempt, const WorkerServices& services);

// Only the variables the launcher sets for one worker, "NAME=value", sorted: what --dry-run shows.
std::vector<std::string> LauncherVariables(const LaunchPlan& plan, const Assignment& assignment,
                                           int attempt, const std::string& store_address,
                                           int local_rank);

}  // namespace cohort::launcher
