#include "launcher/worker_env.h"

#include <algorithm>
#include <cstdlib>
#include <map>

#include "common/env.h"

namespace cohort::launcher {

std::vector<std::string> LauncherVariables(const LaunchPlan& plan, const Assignment& a, int attempt,
                                           const std::string& store_address, int local_rank) {
  const int rank = a.first_rank + local_rank;
  // `attempt` is the job's attempt: the launcher's rounds start at plan.first_restart.
  std::map<std::string, std::string> v = {
      {"COHORT_RANK", std::to_string(rank)},
      {"COHORT_WORLD_SIZE", std::to_string(a.world_size)},
      {"COHORT_LOCAL_RANK", std::to_string(local_rank)},
      {"COHORT_LOCAL_WORLD_SIZE", std::to_string(a.nproc)},
      {"COHORT_NODE_RANK", std::to_string(a.node_rank)},
      {"COHORT_NNODES", std::to_string(a.nnodes)},
      {"COHORT_STORE", store_address},
      {"COHORT_RUN_ID", plan.run_id.value},
      {"COHORT_RESTART", std::to_string(attempt)},
      // torchrun's names, so that torch programs run unchanged (MASTER_* is a free port for
      // their own store, not cohort's).
      {"RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(a.world_size)},
      {"LOCAL_RANK", std::to_string(local_rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(a.nproc)},
      {"GROUP_RANK", std::to_string(a.node_rank)},
      {"MASTER_ADDR", a.master_addr},
      {"MASTER_PORT", std::to_string(a.master_port)},
      {"TORCHELASTIC_RESTART_COUNT", std::to_string(attempt)},
  };
  if (!plan.token.empty()) v["COHORT_TOKEN"] = plan.token;
  if (!plan.backend.value.empty()) v["COHORT_BACKEND"] = plan.backend.value;
  if (!plan.checkpoint_uri.value.empty()) v["COHORT_CHECKPOINT_URI"] = plan.checkpoint_uri.value;
  // A restarted group resumes from the newest complete snapshot unless told otherwise.
  if (!plan.resume.value.empty()) {
    v["COHORT_RESUME"] = plan.resume.value;
  } else if (attempt > 0 && !plan.checkpoint_uri.value.empty()) {
    v["COHORT_RESUME"] = "latest";
  }
  // Several workers sharing the cores each get one thread, as torchrun does, unless set.
  if (a.nproc > 1) {
    for (const char* var : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
      if (!std::getenv(var)) v[var] = "1";
    }
  }
  std::vector<std::string> out;
  for (const auto& [k, val] : v) out.push_back(k + "=" + val);
  return out;
}

std::vector<WorkerSpec> MakeWorkerSpecs(const LaunchPlan& plan, const Assignment& a, int attempt,
                                        const WorkerServices& services) {
  std::vector<WorkerSpec> specs;
  for (int l = 0; l < a.nproc; ++l) {
    WorkerSpec spec;
    spec.rank = a.first_rank + l;
    spec.local_rank = l;
    spec.argv = plan.program;
    env::Map env = env::Snapshot();
    for (const std::string& kv : LauncherVariables(plan, a, attempt, services.store_address, l)) {
      auto eq = kv.find('=');
      env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    if (!services.store_token.empty()) env["COHORT_TOKEN"] = services.store_token;
    if (!services.ps_servers.empty()) env["COHORT_PS_SERVERS"] = services.ps_servers;
    for (const auto& [k, val] : env) spec.env.push_back(k + "=" + val);
    specs.push_back(std::move(spec));
  }
  return specs;
}

}  // namespace cohort::launcher
