// The environment of a `cohort launch` started by a test: every variable of the machine running
// the tests that would change what the launcher derives (the platform's world, the rendezvous,
// its credentials) set to "" (the launcher treats empty as unset), then base, then extra. One list
// for every test that starts the launcher, so a variable the launcher learns to read is cleared
// everywhere at once.
#pragma once

#include <map>
#include <string>

namespace cohort::testing {

inline std::map<std::string, std::string> LauncherTestEnv(
    const std::map<std::string, std::string>& base,
    const std::map<std::string, std::string>& extra = {}) {
  std::map<std::string, std::string> e;
  for (const char* v :
       {"COHORT_NNODES", "COHORT_NODE_RANK", "COHORT_NPROC_PER_NODE", "COHORT_RDZV_ENDPOINT",
        "COHORT_STORE", "COHORT_RUN_ID", "COHORT_TOKEN", "COHORT_RDZV_USER",
        "COHORT_RDZV_PASSWORD", "COHORT_GLOO_HOST", "MASTER_ADDR", "MASTER_PORT",
        "JOB_COMPLETION_INDEX", "PET_NNODES", "PET_NPROC_PER_NODE", "RANK", "WORLD_SIZE",
        "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"}) {
    e[v] = "";
  }
  // Not "": that would leave the verdict in /dev/termination-log when the tests themselves run
  // in a Kubernetes pod (a CI runner's), overwriting its own termination message.
  e["COHORT_TERMINATION_LOG"] = "/dev/null";
  for (const auto& [k, v] : base) e[k] = v;
  for (const auto& [k, v] : extra) e[k] = v;
  return e;
}

}  // namespace cohort::testing
