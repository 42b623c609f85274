#include "tests/util/world.h"

namespace cohort::testing {

std::vector<ProcessResult> RunWorld(const std::string& backend, int world,
                                    const std::vector<std::string>& argv,
                                    std::map<std::string, std::string> env,
                                    std::chrono::milliseconds timeout) {
#ifdef MPIEXEC
  if (backend == "mpi") {
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1";
    std::vector<std::string> mpirun = {MPIEXEC, "-np", std::to_string(world), "--bind-to", "none"};
    for (const auto& [k, v] : env) {
      if (k.rfind("COHORT_", 0) == 0 || k.find("_NUM_THREADS") != std::string::npos) {
        mpirun.insert(mpirun.end(), {"-x", k});
      }
    }
    mpirun.insert(mpirun.end(), argv.begin(), argv.end());
    Subprocess p(mpirun, env);
    return {p.Wait(timeout)};
  }
#endif
  std::vector<std::vector<std::string>> argvs;
  std::vector<std::map<std::string, std::string>> envs;
  for (int r = 0; r < world; ++r) {
    auto e = env;
    e["COHORT_RANK"] = std::to_string(r);
    e["COHORT_WORLD_SIZE"] = std::to_string(world);
    argvs.push_back(argv);
    envs.push_back(e);
  }
  return RunAll(argvs, envs, timeout);
}

}  // namespace cohort::testing
