// A peer SIGKILLed in the middle of large all-reduces, many times, over Gloo's TCP pairs
// (COHORT_SHM=0) and through shared memory: every surviving rank must fail with the error that
// names the dead rank and exit with an error code. None may die of a signal: before
// collectives/sigpipe.h a survivor writing into the dead peer's socket was killed by SIGPIPE,
// which turned one failure into several. Under `cohort launch` the verdict names the dead rank.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include "collectives/store/grpc_store_server.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using collectives::GrpcStoreServer;

constexpr char kToken[] = "sigpipe-test-token";
constexpr int kWorld = 3;
constexpr int kVictim = 1;
// 16 MiB per all-reduce: the survivors are mid-write when the victim dies.
const std::vector<std::string> kKillArgs = {
    "--backend", "gloo", "--mode",        "kill",   "--victim", std::to_string(kVictim),
    "--at",      "2",    "--fault-elems", "4194304"};

std::string Describe(const std::vector<ProcessResult>& rs) {
  std::string s;
  for (size_t r = 0; r < rs.size(); ++r) {
    s +=
        fmt::format("--- rank {} exit {} signal {}{} ({:.1f} s)\n{}", r, rs[r].exit_code,
                    rs[r].signal, rs[r].timed_out ? " TIMED OUT" : "", rs[r].seconds, rs[r].output);
  }
  return s;
}

bool NamesVictim(const std::string& out) {
  const std::string v = std::to_string(kVictim);
  return out.find("rank " + v + " stopped responding") != std::string::npos ||
         out.find("rank " + v + " (pid") != std::string::npos;
}

std::map<std::string, std::string> FaultEnv(const std::string& shm, const std::string& run) {
  return {{"COHORT_TIMEOUT", "20"},     {"COHORT_HEARTBEAT_INTERVAL", "0.2"},
          {"COHORT_SHM", shm},          {"COHORT_RUN_ID", run},
          {"COHORT_LOG_LEVEL", "warn"}, {"OPENBLAS_NUM_THREADS", "1"}};
}

// Workers started directly (no launcher): SIGPIPE keeps its default disposition unless the
// library changes it, so this is where the defect showed.
TEST(Sigpipe, SurvivorsOfAPeerKilledMidSendNameItAndExitWithAnError) {
  GrpcStoreServer server("127.0.0.1", 0, kToken);
  server.Start();
  constexpr int kRounds = 8;  // per transport; without the fix 3 runs in 5 failed
  for (const char* shm : {"0", "1"}) {
    for (int round = 0; round < kRounds; ++round) {
      std::vector<std::vector<std::string>> argvs;
      std::vector<std::map<std::string, std::string>> envs;
      for (int r = 0; r < kWorld; ++r) {
        std::vector<std::string> argv = {BinPath("collective_worker")};
        argv.insert(argv.end(), kKillArgs.begin(), kKillArgs.end());
        auto env = FaultEnv(shm, fmt::format("sigpipe-shm{}-{}", shm, round));
        env["COHORT_STORE"] = fmt::format("127.0.0.1:{}", server.Port());
        env["COHORT_TOKEN"] = kToken;
        env["COHORT_RANK"] = std::to_string(r);
        env["COHORT_WORLD_SIZE"] = std::to_string(kWorld);
        argvs.push_back(argv);
        envs.push_back(env);
      }
      auto rs = RunAll(argvs, envs, 40s);
      const std::string where = fmt::format("COHORT_SHM={} round {}\n", shm, round);
      ASSERT_EQ(rs[kVictim].signal, SIGKILL) << where << Describe(rs);
      for (int r = 0; r < kWorld; ++r) {
        if (r == kVictim) continue;
        ASSERT_EQ(rs[r].signal, 0) << where << "rank " << r << " died of a signal\n"
                                   << Describe(rs);
        ASSERT_EQ(rs[r].exit_code, 3) << where << Describe(rs);
        ASSERT_TRUE(NamesVictim(rs[r].output)) << where << Describe(rs);
      }
    }
  }
}

// The same fault under `cohort launch`: its verdict (the last line, and the exit code 128 + 9)
// names the killed rank, not a survivor that failed because of it.
TEST(Sigpipe, LauncherVerdictNamesTheKilledRank) {
  for (const char* shm : {"0", "1"}) {
    for (int round = 0; round < 2; ++round) {
      std::vector<std::string> argv = {
          BinPath("cohort"),      "launch", "--nproc-per-node",
          std::to_string(kWorld), "--",     BinPath("collective_worker")};
      argv.insert(argv.end(), kKillArgs.begin(), kKillArgs.end());
      Subprocess launcher(argv, FaultEnv(shm, fmt::format("sigpipe-launch{}-{}", shm, round)));
      ProcessResult r = launcher.Wait(60s);
      const std::string where = fmt::format("COHORT_SHM={} round {}\n", shm, round);
      ASSERT_FALSE(r.timed_out) << where << r.output;
      EXPECT_EQ(r.exit_code, 128 + SIGKILL) << where << r.output;
      EXPECT_NE(
          r.output.find(fmt::format("rank {} on node 0 was killed by signal 9 (SIGKILL)", kVictim)),
          std::string::npos)
          << where << r.output;
      EXPECT_EQ(r.output.find("SIGPIPE"), std::string::npos) << where << r.output;
    }
  }
}

// The launcher ignores SIGPIPE itself, but its workers start with the default (SIG_IGN would
// survive exec), as under torchrun: cohort's libraries ignore it where they open sockets.
TEST(Sigpipe, LaunchedWorkersStartWithTheDefaultDisposition) {
  Subprocess launcher({BinPath("cohort"), "launch", "--nproc-per-node", "1", "--", "/bin/grep",
                       "SigIgn", "/proc/self/status"},
                      {});
  ProcessResult r = launcher.Wait(30s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t at = r.output.find("SigIgn:");
  ASSERT_NE(at, std::string::npos) << r.output;
  const uint64_t ignored = std::stoull(r.output.substr(at + 7), nullptr, 16);
  EXPECT_EQ(ignored & (1ull << (SIGPIPE - 1)), 0u) << r.output;
}

}  // namespace
}  // namespace cohort::testing
