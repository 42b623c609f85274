// ProcessGroup between real processes on 127.0.0.1: the worker (process_group_worker.cc) builds
// its group from the environment alone, as a training program does, and checks every value of
// torch-tensor collectives. Three ways in: the cohort env contract with a store hosted by this
// test, torchrun's RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (rank 0 hosts the store), and mpirun.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <functional>

#include "collectives/config.h"
#include "collectives/store/grpc_store_server.h"
#include "common/net.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

constexpr char kToken[] = "process-group-test-token";

// The variables of the machine running the tests that would change the world a worker derives
// (empty counts as unset).
Env CleanWorkerEnv() {
  Env e = {{"COHORT_LOG_LEVEL", "warn"}, {"OPENBLAS_NUM_THREADS", "1"}, {"OMP_NUM_THREADS", "1"}};
  for (const char* v :
       {"COHORT_RANK", "COHORT_WORLD_SIZE", "COHORT_STORE", "COHORT_TOKEN", "COHORT_RUN_ID",
        "COHORT_BACKEND", "COHORT_RESTART", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
        "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"}) {
    e[v] = "";
  }
  return e;
}

std::string Describe(const std::vector<ProcessResult>& rs) {
  std::string s;
  for (size_t r = 0; r < rs.size(); ++r) {
    s +=
        fmt::format("--- rank {} exit {} signal {}{} ({:.1f} s)\n{}", r, rs[r].exit_code,
                    rs[r].signal, rs[r].timed_out ? " TIMED OUT" : "", rs[r].seconds, rs[r].output);
  }
  return s;
}

// n workers, rank r given env(r) on top of a clean environment.
std::vector<ProcessResult> RunWorkers(int n, const std::function<Env(int)>& env) {
  std::vector<std::vector<std::string>> argvs;
  std::vector<Env> envs;
  for (int r = 0; r < n; ++r) {
    argvs.push_back({BinPath("process_group_worker")});
    Env e = CleanWorkerEnv();
    for (const auto& [k, v] : env(r)) e[k] = v;
    envs.push_back(e);
  }
  return RunAll(argvs, envs, 90s);
}

TEST(MultiprocProcessGroup, ThreeProcessesWithTheCohortEnvContract) {
#if !COHORT_HAVE_GLOO
  GTEST_SKIP() << "this build has no Gloo backend";
#endif
  collectives::GrpcStoreServer server("127.0.0.1", 0, kToken);
  server.Start();
  const std::string store = fmt::format("127.0.0.1:{}", server.Port());
  auto rs = RunWorkers(3, [&](int r) {
    return Env{{"COHORT_RANK", std::to_string(r)},
               {"COHORT_WORLD_SIZE", "3"},
               {"COHORT_STORE", store},
               {"COHORT_TOKEN", kToken},
               {"COHORT_RUN_ID", "pg-test"},
               {"COHORT_STORE_TIMEOUT", "20"}};
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(rs[r].exit_code, 0) << Describe(rs);
    EXPECT_NE(rs[r].output.find(fmt::format("rank {} of 3 backend gloo ok", r)), std::string::npos)
        << Describe(rs);
  }
}

TEST(MultiprocProcessGroup, TwoProcessesWithTorchrunVariables) {
#if !COHORT_HAVE_GLOO
  GTEST_SKIP() << "this build has no Gloo backend";
#endif
  const std::string port = std::to_string(net::FreePort());
  auto rs = RunWorkers(2, [&](int r) {
    return Env{{"RANK", std::to_string(r)},
               {"WORLD_SIZE", "2"},
               {"MASTER_ADDR", "127.0.0.1"},
               {"MASTER_PORT", port},
               {"COHORT_STORE_TIMEOUT", "20"}};
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(rs[r].exit_code, 0) << Describe(rs);
    EXPECT_NE(rs[r].output.find(fmt::format("rank {} of 2 backend gloo ok", r)), std::string::npos)
        << Describe(rs);
  }
}

TEST(MultiprocProcessGroup, ThreeProcessesUnderMpirunPickMpi) {
#if !COHORT_HAVE_MPI
  GTEST_SKIP() << "this build has no MPI backend";
#else
  Env e = CleanWorkerEnv();
  e["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
  e["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
  e["OMPI_MCA_rmaps_base_oversubscribe"] = "1";
  std::vector<std::string> argv = {MPIEXEC, "-np", "3", "--bind-to", "none"};
  for (const char* k : {"ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"}) {
    if (std::getenv(k)) argv.insert(argv.end(), {"-x", k});
  }
  argv.push_back(BinPath("process_group_worker"));
  Subprocess p(argv, e);
  auto r = p.Wait(90s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_NE(r.output.find(fmt::format("rank {} of 3 backend mpi ok", rank)), std::string::npos)
        << r.output;
  }
#endif
}

}  // namespace
}  // namespace cohort::testing
