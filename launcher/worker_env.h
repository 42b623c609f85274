// The environment each worker gets: the env contract (DESIGN.md) plus torchrun's names, on top
// of the launcher's own environment.
#pragma once

#include <string>
#include <vector>

#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"
#include "launcher/worker_group.h"

namespace cohort::launcher {

// One spec per local worker of this node for this attempt. store_address is host:port of the
// rendezvous store as the workers reach it; ps_servers, when not empty, goes into
// COHORT_PS_SERVERS.
std::vector<WorkerSpec> MakeWorkerSpecs(const LaunchPlan& plan, const Assignment& assignment,
                                        int attempt, const std::string& store_address,
                                        const std::string& ps_servers = "");

// Only the variables the launcher sets for one worker, "NAME=value", sorted: what --dry-run shows.
std::vector<std::string> LauncherVariables(const LaunchPlan& plan, const Assignment& assignment,
                                           int attempt, const std::string& store_address,
                                           int local_rank);

}  // namespace cohort::launcher
