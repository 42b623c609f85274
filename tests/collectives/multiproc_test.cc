// Collectives between real processes on 127.0.0.1: Gloo workers started directly with the env
// contract, MPI workers started by mpirun, both meeting at a gRPC store hosted by this test.
// The worker (collective_worker.cc) checks every value; here we check exit codes and messages.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "collectives/config.h"
#include "collectives/store/grpc_store_server.h"
#include "common/net.h"
#include "tests/util/dev_shm.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using collectives::GrpcStoreServer;

constexpr char kToken[] = "multiproc-test-token";

class Multiproc : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<GrpcStoreServer>("127.0.0.1", 0, kToken);
    server_->Start();
  }

  std::string StoreAddress() const { return fmt::format("127.0.0.1:{}", server_->Port()); }

  std::map<std::string, std::string> BaseEnv() const {
    return {{"COHORT_STORE", StoreAddress()},
            {"COHORT_TOKEN", kToken},
            {"COHORT_STORE_TIMEOUT", "20"},
            {"COHORT_LOG_LEVEL", "warn"},
            {"OPENBLAS_NUM_THREADS", "1"}};
  }

  // n worker processes, each given its rank through the env contract.
  // With kill_after_first = k, ranks k.. are killed once ranks 0..k-1 have exited.
  std::vector<ProcessResult> Gloo(
      int n, std::vector<std::string> args, std::map<std::string, std::string> env,
      std::chrono::milliseconds timeout, int kill_after_first = 0,
      const std::map<int, std::map<std::string, std::string>>& rank_env = {}) {
    std::vector<std::vector<std::string>> argvs;
    std::vector<std::map<std::string, std::string>> envs;
    for (int r = 0; r < n; ++r) {
      std::vector<std::string> argv = {BinPath(worker_), "--backend", "gloo"};
      argv.insert(argv.end(), args.begin(), args.end());
      auto e = BaseEnv();
      for (const auto& [k, v] : env) e[k] = v;
      if (auto it = rank_env.find(r); it != rank_env.end()) {
        for (const auto& [k, v] : it->second) e[k] = v;
      }
      e["COHORT_RANK"] = std::to_string(r);
      e["COHORT_WORLD_SIZE"] = std::to_string(n);
      argvs.push_back(argv);
      envs.push_back(e);
    }
    if (kill_after_first == 0) return RunAll(argvs, envs, timeout);
    std::vector<std::unique_ptr<Subprocess>> procs;
    for (int r = 0; r < n; ++r) procs.push_back(std::make_unique<Subprocess>(argvs[r], envs[r]));
    std::vector<ProcessResult> rs;
    for (int r = 0; r < n; ++r) {
      if (r == kill_after_first) {
        for (int v = r; v < n; ++v) procs[v]->Kill(SIGKILL);
      }
      rs.push_back(procs[r]->Wait(timeout));
    }
    return rs;
  }

#if COHORT_HAVE_MPI
  // n ranks under mpirun; returns mpirun's result (all ranks' output).
  ProcessResult Mpi(int n, std::vector<std::string> args, std::map<std::string, std::string> env,
                    std::chrono::milliseconds timeout) {
    auto e = BaseEnv();
    for (const auto& [k, v] : env) e[k] = v;
    e["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
    e["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
    e["OMPI_MCA_rmaps_base_oversubscribe"] = "1";
    std::vector<std::string> argv = {MPIEXEC, "-np", std::to_string(n), "--bind-to", "none"};
    for (const auto& [k, v] : e) {
      if (k.rfind("COHORT_", 0) == 0 || k == "OPENBLAS_NUM_THREADS") {
        argv.push_back("-x");
        argv.push_back(k);
      }
    }
    // mpirun passes on only what it is told to: the sanitizer build's options too.
    for (const char* k : {"ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"}) {
      if (std::getenv(k)) {
        argv.push_back("-x");
        argv.push_back(k);
      }
    }
    argv.push_back(BinPath(worker_));
    argv.push_back("--backend");
    argv.push_back("mpi");
    argv.insert(argv.end(), args.begin(), args.end());
    Subprocess p(argv, e);
    return p.Wait(timeout);
  }

#endif

  std::unique_ptr<GrpcStoreServer> server_;
  // The worker binary the ranks run: collective_worker, or split_worker for the group tests.
  std::string worker_ = "collective_worker";
};

std::string Describe(const std::vector<ProcessResult>& rs) {
  std::string s;
  for (size_t r = 0; r < rs.size(); ++r) {
    s +=
        fmt::format("--- rank {} exit {} signal {}{} ({:.1f} s)\n{}", r, rs[r].exit_code,
                    rs[r].signal, rs[r].timed_out ? " TIMED OUT" : "", rs[r].seconds, rs[r].output);
  }
  return s;
}

int CountShmSegments() { return CountDevShmEntries("cohort-"); }

// ---- the matrix: every op x dtype x count, world sizes 1..4 ----

struct MatrixCase {
  const char* backend;
  int world;
  const char* counts;
};

class Matrix : public Multiproc, public ::testing::WithParamInterface<MatrixCase> {};

TEST_P(Matrix, EveryOpDtypeAndCountIsCorrect) {
  const auto& c = GetParam();
  const std::vector<std::string> args = {"--mode", "matrix", "--counts", c.counts};
  const auto timeout = 300s;
  if (std::string(c.backend).rfind("gloo", 0) == 0) {
    // "gloo": all-reduce through shared memory (every rank is on this host); "gloo-tcp": the
    // same with it turned off, all-reduce over Gloo's TCP pairs.
    std::map<std::string, std::string> env;
    if (std::string(c.backend) == "gloo-tcp") env["COHORT_SHM"] = "0";
    auto rs = Gloo(c.world, args, env, timeout);
    for (const auto& r : rs) {
      ASSERT_EQ(r.exit_code, 0) << Describe(rs);
      EXPECT_NE(r.output.find("0 failed"), std::string::npos) << r.output;
    }
  } else {
#if COHORT_HAVE_MPI
    auto r = Mpi(c.world, args, {}, timeout);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    for (int rank = 0; rank < c.world; ++rank) {
      EXPECT_NE(r.output.find(fmt::format("rank {} of {} (mpi)", rank, c.world)), std::string::npos)
          << r.output;
    }
    EXPECT_EQ(r.output.find("FAIL"), std::string::npos) << r.output;
#endif
  }
}

[[maybe_unused]] std::vector<MatrixCase> MatrixCases(const char* backend) {
  std::vector<MatrixCase> cases;
  // Large messages take the backends' pipelined/segmented paths. 16 Mi elements for Gloo at
  // world 2 (cohort's shared-memory pieces and Gloo's ring); everywhere else a prime count near
  // 1 Mi (4 MiB of f32) reaches the same paths, including uneven ring chunks, at a sixteenth of
  // the CI time (16 Mi x 7 dtypes took 250-300 s there). MPI hands any size to MPI_Allreduce
  // whole, so 16 Mi there only timed Open MPI's spinning ranks (75-150 s at world 2).
  const bool gloo = std::string(backend) == "gloo";
  for (int world : {1, 2, 3, 4}) {
    cases.push_back({backend, world, "0,1,7,1031"});
    cases.push_back({backend, world, gloo && world == 2 ? "16777216" : "1048583"});
  }
  return cases;
}

[[maybe_unused]] std::string MatrixName(const ::testing::TestParamInfo<MatrixCase>& info) {
  const std::string counts = info.param.counts;
  return fmt::format("world{}_{}", info.param.world,
                     counts == "16777216"  ? "16Mi"
                     : counts == "1048583" ? "1Mi_prime"
                                           : "small");
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Matrix);  // a build with no CPU backend
#if COHORT_HAVE_GLOO
INSTANTIATE_TEST_SUITE_P(Gloo, Matrix, ::testing::ValuesIn(MatrixCases("gloo")), MatrixName);
// The TCP all-reduce, as between hosts: odd and even worlds, uneven ring chunks.
INSTANTIATE_TEST_SUITE_P(GlooTcp, Matrix,
                         ::testing::Values(MatrixCase{"gloo-tcp", 2, "0,1,7,1031"},
                                           MatrixCase{"gloo-tcp", 3, "0,1,7,1031"},
                                           MatrixCase{"gloo-tcp", 3, "1048583"}),
                         MatrixName);
#endif
#if COHORT_HAVE_MPI
INSTANTIATE_TEST_SUITE_P(Mpi, Matrix, ::testing::ValuesIn(MatrixCases("mpi")), MatrixName);
#endif

// ---- failures: each must end quickly, with a message naming the culprit ----

// These run over Gloo: the fault paths are the same code for every CPU backend.
#if COHORT_HAVE_GLOO
TEST_F(Multiproc, GlooHungPeerIsNamedWithinTheTimeout) {
  // The victim sleeps for minutes; it is killed as soon as the others are done.
  auto rs = Gloo(3, {"--mode", "hang", "--victim", "2", "--at", "3"},
                 {{"COHORT_TIMEOUT", "3"}, {"COHORT_HEARTBEAT_INTERVAL", "0.2"}}, 30s,
                 /*kill_after_first=*/2);
  for (int r : {0, 1}) {
    EXPECT_EQ(rs[r].exit_code, 3) << Describe(rs);
    EXPECT_NE(rs[r].output.find("ERROR [timeout]"), std::string::npos) << Describe(rs);
    EXPECT_NE(rs[r].output.find("allreduce #3"), std::string::npos) << Describe(rs);
    EXPECT_NE(rs[r].output.find("rank 2 never reached it"), std::string::npos) << Describe(rs);
    EXPECT_LT(rs[r].seconds, 12.0) << Describe(rs);
  }
  EXPECT_EQ(rs[2].signal, SIGKILL) << Describe(rs);
}

// Over shared memory (the default here) and over TCP. Shared memory notices the dead process
// itself ("rank 1 (pid N) exited"); TCP through the health monitor's heartbeats.
TEST_F(Multiproc, GlooPeerKilledMidCollectiveIsNamed) {
  const int segments_before = CountShmSegments();
  for (const char* shm : {"1", "0"}) {
    auto rs = Gloo(4, {"--mode", "kill", "--victim", "1", "--at", "3"},
                   {{"COHORT_TIMEOUT", "20"},
                    {"COHORT_HEARTBEAT_INTERVAL", "0.2"},
                    {"COHORT_SHM", shm},
                    {"COHORT_RUN_ID", std::string("kill-shm") + shm}},
                   60s);
    EXPECT_EQ(rs[1].signal, SIGKILL) << Describe(rs);
    for (int r : {0, 2, 3}) {
      EXPECT_EQ(rs[r].exit_code, 3) << Describe(rs);
      const std::string& out = rs[r].output;
      EXPECT_TRUE(out.find("rank 1 stopped responding") != std::string::npos ||
                  out.find("rank 1 (pid") != std::string::npos)
          << "COHORT_SHM=" << shm << "\n"
          << Describe(rs);
      // Well inside the 20 s timeout: a dead peer is noticed, not waited out.
      EXPECT_LT(rs[r].seconds, 15.0) << Describe(rs);
    }
  }
  // The segment's name is unlinked once every rank has mapped it: a SIGKILL leaves nothing.
  EXPECT_EQ(CountShmSegments(), segments_before);
}

TEST_F(Multiproc, GlooUsesSharedMemoryOnlyWhenEveryRankAgrees) {
  std::map<std::string, std::string> debug = {
      {"COHORT_LOG_LEVEL", "debug"}, {"COHORT_LOG_SUBSYS", "gloo"}, {"COHORT_RUN_ID", "agree"}};
  auto rs = Gloo(3, {"--mode", "matrix", "--counts", "1031"}, debug, 120s);
  for (const auto& r : rs) {
    ASSERT_EQ(r.exit_code, 0) << Describe(rs);
    EXPECT_NE(r.output.find("all-reduce through shared memory"), std::string::npos) << Describe(rs);
  }
  // One rank that says no: every rank goes over TCP, and says why.
  debug["COHORT_RUN_ID"] = "one-says-no";
  rs = Gloo(3, {"--mode", "matrix", "--counts", "1031"}, debug, 120s, 0,
            {{1, {{"COHORT_SHM", "0"}}}});
  for (const auto& r : rs) {
    ASSERT_EQ(r.exit_code, 0) << Describe(rs);
    EXPECT_NE(r.output.find("0 failed"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("no shared memory: rank 1: COHORT_SHM=0"), std::string::npos)
        << Describe(rs);
  }
}

TEST_F(Multiproc, GlooMismatchedSizesFailWithoutHanging) {
  auto rs = Gloo(2, {"--mode", "mismatch"}, {{"COHORT_TIMEOUT", "3"}}, 40s);
  for (const auto& r : rs) {
    EXPECT_FALSE(r.timed_out) << Describe(rs);
    EXPECT_NE(r.exit_code, 0) << Describe(rs);
    // The shared-memory all-reduce compares the calls without debug checks, and names both.
    EXPECT_NE(r.output.find("ranks called different all-reduces"), std::string::npos)
        << Describe(rs);
    EXPECT_NE(r.output.find("f32[7] sum"), std::string::npos) << Describe(rs);
    EXPECT_NE(r.output.find("f32[9] sum"), std::string::npos) << Describe(rs);
  }
}

TEST_F(Multiproc, DebugChecksNameMismatchedCalls) {
  auto rs = Gloo(2, {"--mode", "mismatch"},
                 {{"COHORT_TIMEOUT", "10"}, {"COHORT_DEBUG_COLLECTIVES", "1"}}, 40s);
  for (const auto& r : rs) {
    EXPECT_EQ(r.exit_code, 3) << Describe(rs);
    EXPECT_NE(r.output.find("ERROR [invalid argument]"), std::string::npos) << Describe(rs);
    EXPECT_NE(r.output.find("ranks called different operations"), std::string::npos)
        << Describe(rs);
    EXPECT_NE(r.output.find("f32[7]"), std::string::npos) << Describe(rs);
    EXPECT_NE(r.output.find("f32[9]"), std::string::npos) << Describe(rs);
  }
}

TEST_F(Multiproc, WrongTokenIsRefused) {
  auto rs =
      Gloo(2, {"--mode", "matrix", "--counts", "1"}, {{"COHORT_TOKEN", "not-the-token"}}, 30s);
  for (const auto& r : rs) {
    EXPECT_EQ(r.exit_code, 3) << Describe(rs);
    EXPECT_NE(r.output.find("ERROR [unauthenticated]"), std::string::npos) << Describe(rs);
  }
}

TEST_F(Multiproc, StoreThatNeverComesUpFailsAtTheDeadlineNamingIt) {
  const int port = net::FreePort();
  const std::string address = fmt::format("127.0.0.1:{}", port);
  auto rs = Gloo(2, {"--mode", "matrix", "--counts", "1"},
                 {{"COHORT_STORE", address}, {"COHORT_STORE_TIMEOUT", "2"}}, 30s);
  for (const auto& r : rs) {
    EXPECT_EQ(r.exit_code, 3) << Describe(rs);
    EXPECT_NE(r.output.find("ERROR [unavailable]"), std::string::npos) << Describe(rs);
    EXPECT_NE(r.output.find(address), std::string::npos) << Describe(rs);
    EXPECT_LT(r.seconds, 10.0) << Describe(rs);
  }
}

TEST_F(Multiproc, RankThatNeverJoinsIsNamed) {
  // Three ranks are expected but only ranks 0 and 2 start.
  std::vector<std::vector<std::string>> argvs;
  std::vector<std::map<std::string, std::string>> envs;
  for (int r : {0, 2}) {
    argvs.push_back({BinPath("collective_worker"), "--counts", "1"});
    auto e = BaseEnv();
    e["COHORT_RANK"] = std::to_string(r);
    e["COHORT_WORLD_SIZE"] = "3";
    e["COHORT_STORE_TIMEOUT"] = "2";
    envs.push_back(e);
  }
  auto rs = RunAll(argvs, envs, 30s);
  for (const auto& r : rs) {
    EXPECT_EQ(r.exit_code, 3) << Describe(rs);
    EXPECT_NE(r.output.find("rank 1 of 3 never joined"), std::string::npos) << Describe(rs);
  }
}

TEST_F(Multiproc, SecondJobOnTheSameStoreNeedsItsOwnRunId) {
  const std::vector<std::string> args = {"--mode", "matrix", "--counts", "1", "--dtypes", "f32"};
  auto first = Gloo(2, args, {{"COHORT_RUN_ID", "job-a"}}, 30s);
  for (const auto& r : first) ASSERT_EQ(r.exit_code, 0) << Describe(first);
  auto again = Gloo(2, args, {{"COHORT_RUN_ID", "job-a"}}, 30s);
  for (const auto& r : again) {
    EXPECT_EQ(r.exit_code, 3) << Describe(again);
    EXPECT_NE(r.output.find("ERROR [invalid argument]"), std::string::npos) << Describe(again);
    EXPECT_NE(r.output.find("give each job its own COHORT_RUN_ID"), std::string::npos)
        << Describe(again);
  }
  auto other = Gloo(2, args, {{"COHORT_RUN_ID", "job-b"}}, 30s);
  for (const auto& r : other) EXPECT_EQ(r.exit_code, 0) << Describe(other);
}

#endif  // COHORT_HAVE_GLOO

#if COHORT_HAVE_MPI
TEST_F(Multiproc, MpiHungPeerIsNamedAndTheJobEnds) {
  auto r = Mpi(3, {"--mode", "hang", "--victim", "1", "--at", "2"},
               {{"COHORT_TIMEOUT", "3"}, {"COHORT_HEARTBEAT_INTERVAL", "0.2"}}, 60s);
  EXPECT_FALSE(r.timed_out) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("allreduce #2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 1 never reached it"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 30.0) << r.output;
}

TEST_F(Multiproc, MpiDetectsMismatchedSizesItself) {
  auto r = Mpi(2, {"--mode", "mismatch"}, {{"COHORT_TIMEOUT", "5"}}, 60s);
  EXPECT_FALSE(r.timed_out) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ERROR [invalid argument] mpi allreduce #1"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("MPI_Allreduce() failed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MPI_ERR_TRUNCATE"), std::string::npos) << r.output;
}

TEST_F(Multiproc, MpiDebugChecksNameMismatchedCalls) {
  auto r = Mpi(2, {"--mode", "mismatch"},
               {{"COHORT_TIMEOUT", "10"}, {"COHORT_DEBUG_COLLECTIVES", "1"}}, 60s);
  EXPECT_FALSE(r.timed_out) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ranks called different operations"), std::string::npos) << r.output;
}
#endif

// ---- groups: Split, Mesh and batched send/recv (split_worker.cc checks the values) ----

TEST_F(Multiproc, GlooGroupsAtWorlds1To4) {
  worker_ = "split_worker";
  for (int n = 1; n <= 4; ++n) {
    auto rs = Gloo(n, {}, {{"COHORT_RUN_ID", fmt::format("groups-{}", n)}}, 60s);
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(rs[r].exit_code, 0) << "world " << n << "\n" << Describe(rs);
      EXPECT_NE(rs[r].output.find("groups ok"), std::string::npos) << Describe(rs);
    }
  }
}

TEST_F(Multiproc, GlooGroupHangNamesGroupAndGlobalRank) {
  worker_ = "split_worker";
  // Odd global ranks 1, 3 form group odd-1; its rank 0 (global 1) never calls the all-reduce.
  auto rs = Gloo(4, {"--mode", "hang"},
                 {{"COHORT_TIMEOUT", "2"}, {"COHORT_HEARTBEAT_INTERVAL", "0.2"}}, 20s, 0);
  const ProcessResult& r3 = rs[3];
  EXPECT_EQ(r3.exit_code, 3) << Describe(rs);
  EXPECT_NE(r3.output.find("on rank 1 of group odd-1 (global rank 3)"), std::string::npos)
      << Describe(rs);
  EXPECT_NE(r3.output.find("rank 0 of group odd-1 (global rank 1) never reached it"),
            std::string::npos)
      << Describe(rs);
  EXPECT_EQ(rs[0].exit_code, 0) << Describe(rs);  // the even group completed
  EXPECT_LT(r3.seconds, 10.0) << Describe(rs);
}

#if COHORT_HAVE_MPI
TEST_F(Multiproc, MpiGroupsAtWorlds1To4) {
  worker_ = "split_worker";
  for (int n : {1, 3, 4}) {
    auto r = Mpi(n, {}, {}, 90s);
    EXPECT_EQ(r.exit_code, 0) << "world " << n << "\n" << r.output;
    for (int q = 0; q < n; ++q) {
      EXPECT_NE(r.output.find(fmt::format("rank {} of {} (mpi): groups ok", q, n)),
                std::string::npos)
          << r.output;
    }
  }
}
#endif

}  // namespace
}  // namespace cohort::testing
