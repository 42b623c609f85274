// `cohort launch` end to end: real launcher processes starting real workers over 127.0.0.1.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "collectives/config.h"
#include "common/net.h"
#include "tests/util/launch_env.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

const std::string kCohort = BinPath("cohort");
const std::string kWorker = BinPath("launch_test_worker");

Env Clean(Env extra = {}) { return LauncherTestEnv({{"COHORT_LOG_LEVEL", "warn"}}, extra); }

std::vector<std::string> LaunchArgs(std::vector<std::string> flags,
                                    std::vector<std::string> worker) {
  std::vector<std::string> argv = {kCohort, "launch"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back("--");
  argv.push_back(kWorker);
  argv.insert(argv.end(), worker.begin(), worker.end());
  return argv;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Has(const ProcessResult& r, const std::string& text) {
  return r.output.find(text) != std::string::npos;
}

int Count(const std::string& s, const std::string& text) {
  int n = 0;
  for (size_t at = s.find(text); at != std::string::npos; at = s.find(text, at + 1)) ++n;
  return n;
}

ProcessResult RunToEnd(std::vector<std::string> argv, Env env = Clean(),
                       std::chrono::milliseconds timeout = 60s) {
  Subprocess p(argv, env);
  return p.Wait(timeout);
}

// ---- one node ----

TEST(Launch, FourLocalWorkersComplete) {
  TestDir dir("launch");
  const std::string verdict = dir.File("termination-log");
  auto r = RunToEnd(LaunchArgs({"--nproc-per-node", "4"}, {"--mode", "ok"}),
                    Clean({{"COHORT_TERMINATION_LOG", verdict}}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadFile(verdict), "succeeded\n");  // the container's termination message
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_TRUE(Has(r, fmt::format("[rank {}] rank {} of 4 ok restart 0", rank, rank))) << r.output;
  }
  EXPECT_TRUE(Has(r, "[cohort launch] attempt 1: started 4 workers (ranks 0..3) of a world of 4"))
      << r.output;
}

TEST(Launch, OutputIsPassedThroughLineByLineWithTheRank) {
  // A termination message that cannot be written changes nothing.
  auto r = RunToEnd(LaunchArgs({"--nproc-per-node", "2"}, {"--mode", "print", "--lines", "50"}),
                    Clean({{"COHORT_TERMINATION_LOG", "/proc/no-such-dir/termination-log"}}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int rank : {0, 1}) {
    for (int i : {0, 49}) {
      EXPECT_TRUE(Has(r, fmt::format("[rank {}] out {} of rank {}\n", rank, i, rank))) << r.output;
      EXPECT_TRUE(Has(r, fmt::format("[rank {}] err {} of rank {}\n", rank, i, rank))) << r.output;
    }
    // A last line without a newline still arrives whole, on a line of its own.
    EXPECT_TRUE(Has(r, fmt::format("[rank {}] no newline at the end\n", rank))) << r.output;
  }
  // Every line of the workers' output carries a prefix: no interleaved fragments.
  EXPECT_EQ(Count(r.output, "of rank"), 2 * 2 * 50) << r.output;
}

TEST(Launch, WorkersGetTheEnvContract) {
  auto r = RunToEnd(LaunchArgs({"--nproc-per-node", "2", "--run-id", "job7"}, {"--mode", "env"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* want :
       {"[rank 1] COHORT_RANK=1", "[rank 1] COHORT_WORLD_SIZE=2", "[rank 1] COHORT_LOCAL_RANK=1",
        "[rank 0] COHORT_NNODES=1", "[rank 0] COHORT_RESTART=0", "[rank 0] COHORT_RUN_ID=job7",
        "[rank 1] RANK=1", "[rank 1] WORLD_SIZE=2", "[rank 0] MASTER_ADDR=127.0.0.1"}) {
    EXPECT_TRUE(Has(r, want)) << want << "\n" << r.output;
  }
}

TEST(Launch, KilledWorkerRestartsTheGroupAndTheSecondAttemptCompletes) {
  auto r =
      RunToEnd(LaunchArgs({"--nproc-per-node", "4", "--max-restarts", "1", "--grace-period", "2"},
                          {"--mode", "crash", "--victim", "2", "--until", "1"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r, "rank 2 on node 0 was killed by signal 9 (SIGKILL)")) << r.output;
  EXPECT_TRUE(Has(r, "restarting the group: attempt 2 of 2")) << r.output;
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_TRUE(Has(r, fmt::format("rank {} of 4 ok restart 1", rank))) << r.output;
  }
}

TEST(Launch, NoRestartsLeftExitsWithTheWorkersSignal) {
  auto r =
      RunToEnd(LaunchArgs({"--nproc-per-node", "3", "--max-restarts", "1", "--grace-period", "2"},
                          {"--mode", "crash", "--victim", "1", "--until", "9"}));
  EXPECT_EQ(r.exit_code, 128 + SIGKILL) << r.output;
  EXPECT_EQ(Count(r.output, "was killed by signal 9 (SIGKILL): stopping the other workers"), 2)
      << r.output;
  EXPECT_TRUE(Has(r,
                  "failed: rank 1 on node 0 was killed by signal 9 (SIGKILL); no restarts "
                  "left (--max-restarts 1)"))
      << r.output;
}

TEST(Launch, MaxRestartsZeroFailsFastWithTheWorkersCode) {
  TestDir dir("launch");
  const std::string verdict = dir.File("termination-log");
  auto r =
      RunToEnd(LaunchArgs({"--nproc-per-node", "3", "--max-restarts", "0", "--grace-period", "5"},
                          {"--mode", "exit", "--victim", "1", "--code", "7"}),
               Clean({{"COHORT_TERMINATION_LOG", verdict}}));
  EXPECT_EQ(r.exit_code, 7) << r.output;
  EXPECT_TRUE(Has(r, "failed: rank 1 on node 0 exited with code 7; no restarts allowed"))
      << r.output;
  // The same line is the container's termination message, which the operator reports.
  EXPECT_EQ(
      ReadFile(verdict),
      "failed: rank 1 on node 0 exited with code 7; no restarts allowed (--max-restarts 0)\n");
  EXPECT_LT(r.seconds, 10) << r.output;
  EXPECT_EQ(Count(r.output, "restarting"), 0) << r.output;
}

TEST(Launch, HungWorkerIsDetectedAndTheGroupRestarts) {
  auto r = RunToEnd(LaunchArgs({"--nproc-per-node", "2", "--max-restarts", "1",
                                "--heartbeat-timeout", "1.5", "--grace-period", "1"},
                               {"--mode", "hang", "--victim", "1", "--until", "1"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r, "rank 1 on node 0 stopped heartbeating: last seen at ")) << r.output;
  EXPECT_TRUE(Has(r, "(--heartbeat-timeout 1.5 s)")) << r.output;
  EXPECT_TRUE(Has(r, "rank 1 of 2 ok restart 1")) << r.output;
}

TEST(Launch, HungWorkerWithoutRestartsExits124) {
  auto r = RunToEnd(
      LaunchArgs({"--nproc-per-node", "2", "--heartbeat-timeout", "1", "--grace-period", "1"},
                 {"--mode", "hang", "--victim", "0", "--until", "9"}));
  EXPECT_EQ(r.exit_code, 124) << r.output;
  EXPECT_LT(r.seconds, 20) << r.output;
}

TEST(Launch, SigtermIsPassedToTheWorkers) {
  Subprocess p(LaunchArgs({"--nproc-per-node", "2", "--grace-period", "10"}, {"--mode", "sleep"}),
               Clean());
  ASSERT_TRUE(p.AwaitLine("[rank 1] rank 1 sleeping", 20s)) << p.Output();
  ASSERT_TRUE(p.AwaitLine("[rank 0] rank 0 sleeping", 20s)) << p.Output();
  ::kill(p.pid(), SIGTERM);  // the launcher only, as Kubernetes does
  auto r = p.Wait(20s);
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.output;
  EXPECT_TRUE(Has(r, "received SIGTERM: passing it to the workers")) << r.output;
  EXPECT_TRUE(Has(r, "[rank 0] rank 0 got SIGTERM")) << r.output;
  EXPECT_TRUE(Has(r, "[rank 1] rank 1 got SIGTERM")) << r.output;
  EXPECT_LT(r.seconds, 15) << r.output;  // they exit at once, not after the grace period
}

TEST(Launch, WorkersIgnoringSigtermAreKilledAfterTheGracePeriod) {
  Subprocess p(LaunchArgs({"--nproc-per-node", "2", "--grace-period", "1"},
                          {"--mode", "sleep", "--ignore-term"}),
               Clean());
  ASSERT_TRUE(p.AwaitLine("[rank 1] rank 1 sleeping", 20s)) << p.Output();
  ASSERT_TRUE(p.AwaitLine("[rank 0] rank 0 sleeping", 20s)) << p.Output();
  ::kill(p.pid(), SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = p.Wait(20s);
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.output;
  EXPECT_TRUE(Has(r, "rank 0 was killed by signal 9 (SIGKILL)")) << r.output;
  const double after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(after, 0.9) << r.output;
  EXPECT_LT(after, 8) << r.output;
}

// ---- bad input: one line, non-zero, never a hang ----

// What only the command shows (a bad flag, a program that cannot start) and one error of the
// plan, to show that the plan's errors reach the user as one line and exit 2; plan_test has the
// rest of the plan's errors in process.
TEST(Launch, BadInputIsOneLine) {
  struct Case {
    std::vector<std::string> argv;
    int code;
    std::string text;
    std::string verdict;  // the termination message's start; "": none is written
  };
  const std::vector<Case> cases = {
      {{kCohort, "launch", "--nproc-per-node", "2", "--bogus", "--", kWorker}, 2, "--bogus", ""},
      {{kCohort, "launch", "--nproc-per-node", "0", "--", kWorker},
       2,
       "--nproc-per-node='0' must be an integer >= 1",
       "failed: --nproc-per-node='0' must be an integer >= 1"},
      {{kCohort, "launch", "--", "./no-such-program"},
       2,
       "cannot run './no-such-program'",
       "failed: cannot run './no-such-program'"},
  };
  TestDir dir("launch");
  for (const Case& c : cases) {
    const std::string verdict = dir.File("termination-log");
    std::remove(verdict.c_str());
    auto r = RunToEnd(c.argv, Clean({{"COHORT_TERMINATION_LOG", verdict}}), 20s);
    EXPECT_EQ(r.exit_code, c.code) << r.output;
    EXPECT_TRUE(Has(r, c.text)) << c.text << "\n" << r.output;
    EXPECT_LE(Count(r.output, "\n"), 2) << r.output;  // the line (and at most one about failing)
    EXPECT_EQ(ReadFile(verdict).rfind(c.verdict, 0), 0u) << c.verdict << "\n" << ReadFile(verdict);
    EXPECT_EQ(ReadFile(verdict).empty(), c.verdict.empty()) << ReadFile(verdict);
  }
}

// ---- several nodes on 127.0.0.1 ----

// Node i of n, as a Kubernetes Indexed Job pod would see it (JOB_COMPLETION_INDEX).
Env IndexedJobNode(int index, int nnodes, int port, Env extra = {}) {
  Env e = Clean({{"JOB_COMPLETION_INDEX", std::to_string(index)},
                 {"COHORT_NNODES", std::to_string(nnodes)},
                 {"COHORT_RDZV_ENDPOINT", fmt::format("127.0.0.1:{}", port)},
                 {"COHORT_RUN_ID", "indexed-job"},
                 {"COHORT_TOKEN", "t0k"}});
  for (auto& [k, v] : extra) e[k] = v;
  return e;
}

TEST(Launch, TwoLaunchersFormOneWorldOfFour) {
  const int port = net::FreePort();
  const auto argv = LaunchArgs({"--nproc-per-node", "2"}, {"--mode", "ok"});
  Subprocess node0(argv, IndexedJobNode(0, 2, port));
  Subprocess node1(argv, IndexedJobNode(1, 2, port));
  auto r0 = node0.Wait(60s), r1 = node1.Wait(60s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r1.output;
  ASSERT_EQ(r1.exit_code, 0) << r0.output << r1.output;
  for (int rank : {0, 1}) EXPECT_TRUE(Has(r0, fmt::format("rank {} of 4 ok", rank))) << r0.output;
  for (int rank : {2, 3}) EXPECT_TRUE(Has(r1, fmt::format("rank {} of 4 ok", rank))) << r1.output;
  EXPECT_TRUE(Has(r1, "started 2 workers (ranks 2..3) of a world of 4")) << r1.output;
}

TEST(Launch, LateNodeJoinsWithinTheRendezvousTimeout) {
  const int port = net::FreePort();
  const auto argv = LaunchArgs({"--nproc-per-node", "1", "--rdzv-timeout", "30"}, {"--mode", "ok"});
  Subprocess node0(argv, IndexedJobNode(0, 2, port));
  std::this_thread::sleep_for(600ms);  // node 0 is up and waiting by then
  Subprocess node1(argv, IndexedJobNode(1, 2, port));
  auto r0 = node0.Wait(60s), r1 = node1.Wait(60s);
  EXPECT_EQ(r0.exit_code, 0) << r0.output << r1.output;
  EXPECT_EQ(r1.exit_code, 0) << r0.output << r1.output;
}

TEST(Launch, NodeThatNeverArrivesIsNamed) {
  const int port = net::FreePort();
  TestDir dir("launch");
  const std::string verdict = dir.File("termination-log");
  auto r = RunToEnd(LaunchArgs({"--nproc-per-node", "1", "--rdzv-timeout", "1"}, {"--mode", "ok"}),
                    IndexedJobNode(0, 3, port, {{"COHORT_TERMINATION_LOG", verdict}}), 30s);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(Has(r, "node ranks 1,2 of 3 never joined the rendezvous at 127.0.0.1:")) << r.output;
  EXPECT_LT(r.seconds, 10) << r.output;
  EXPECT_EQ(
      ReadFile(verdict).rfind("failed: rendezvous failed: node ranks 1,2 of 3 never joined", 0), 0u)
      << ReadFile(verdict);
}

TEST(Launch, UnreachableEndpointFailsWithinTheTimeoutNamingIt) {
  const int port = net::FreePort();
  auto r = RunToEnd(LaunchArgs({"--nproc-per-node", "1", "--rdzv-timeout", "1"}, {"--mode", "ok"}),
                    IndexedJobNode(1, 2, port), 30s);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(Has(r, fmt::format("127.0.0.1:{}", port))) << r.output;
  EXPECT_TRUE(Has(r, "cannot reach the rendezvous store")) << r.output;
  EXPECT_LT(r.seconds, 10) << r.output;
}

TEST(Launch, TwoNodesClaimingOneRankAllFail) {
  const int port = net::FreePort();
  const auto argv = LaunchArgs({"--nproc-per-node", "1", "--rdzv-timeout", "20"}, {"--mode", "ok"});
  Subprocess node0(argv, IndexedJobNode(0, 3, port));
  Subprocess node1(argv, IndexedJobNode(1, 3, port));
  std::this_thread::sleep_for(500ms);
  Subprocess again(argv, IndexedJobNode(1, 3, port));
  auto r0 = node0.Wait(30s), r1 = node1.Wait(30s), r2 = again.Wait(30s);
  for (const auto* r : {&r0, &r1, &r2}) {
    EXPECT_EQ(r->exit_code, 3) << r0.output << r1.output << r2.output;
    EXPECT_TRUE(Has(*r, "node rank 1 is claimed twice")) << r->output;
    EXPECT_LT(r->seconds, 15) << r->output;  // not the 20 s rendezvous timeout
  }
}

TEST(Launch, NodesDisagreeingOnTheWorldSizeFail) {
  const int port = net::FreePort();
  const auto argv = LaunchArgs({"--nproc-per-node", "1", "--rdzv-timeout", "20"}, {"--mode", "ok"});
  Subprocess node0(argv, IndexedJobNode(0, 2, port));
  Subprocess node1(argv, IndexedJobNode(1, 2, port, {{"COHORT_NNODES", "3"}}));
  auto r0 = node0.Wait(30s), r1 = node1.Wait(30s);
  for (const auto* r : {&r0, &r1}) {
    EXPECT_EQ(r->exit_code, 3) << r0.output << r1.output;
    EXPECT_TRUE(Has(*r, "the nodes disagree on the size of the job")) << r->output;
    EXPECT_LT(r->seconds, 15) << r->output;
  }
}

TEST(Launch, FailureOnOneNodeRestartsEveryNode) {
  const int port = net::FreePort();
  const auto argv =
      LaunchArgs({"--nproc-per-node", "2", "--max-restarts", "1", "--grace-period", "2"},
                 {"--mode", "crash", "--victim", "3", "--until", "1"});
  Subprocess node0(argv, IndexedJobNode(0, 2, port));
  Subprocess node1(argv, IndexedJobNode(1, 2, port));
  auto r0 = node0.Wait(60s), r1 = node1.Wait(60s);
  ASSERT_EQ(r0.exit_code, 0) << r0.output << r1.output;
  ASSERT_EQ(r1.exit_code, 0) << r0.output << r1.output;
  EXPECT_TRUE(Has(r0, "rank 3 on node 1 was killed by signal 9 (SIGKILL): stopping this node's"))
      << r0.output;
  EXPECT_TRUE(Has(r0, "rank 0 of 4 ok restart 1")) << r0.output;
  EXPECT_TRUE(Has(r1, "rank 3 of 4 ok restart 1")) << r1.output;
}

TEST(Launch, NodeZeroDyingStopsTheOtherNodes) {
  const int port = net::FreePort();
  const auto argv =
      LaunchArgs({"--nproc-per-node", "1", "--grace-period", "5"}, {"--mode", "sleep"});
  Subprocess node0(argv, IndexedJobNode(0, 2, port));
  Subprocess node1(argv, IndexedJobNode(1, 2, port));
  ASSERT_TRUE(node1.AwaitLine("[rank 1] rank 1 sleeping", 20s)) << node1.Output();
  ASSERT_TRUE(node0.AwaitLine("[rank 0] rank 0 sleeping", 20s)) << node0.Output();
  ::kill(node0.pid(), SIGKILL);  // node 0's launcher and the store it hosts vanish
  auto r1 = node1.Wait(30s);
  EXPECT_EQ(r1.exit_code, 3) << r1.output;
  EXPECT_TRUE(Has(r1, "lost the rendezvous store")) << r1.output;
  EXPECT_TRUE(Has(r1, "[rank 1] rank 1 got SIGTERM")) << r1.output;  // stopped, not killed
  EXPECT_LT(r1.seconds, 20) << r1.output;
}

TEST(Launch, ElasticNodeCountStartsWithMinAfterTheLastCall) {
  auto r = RunToEnd(LaunchArgs(
      {"--nnodes", "1:2", "--rdzv-endpoint", fmt::format("127.0.0.1:{}", net::FreePort()),
       "--rdzv-last-call", "0.5", "--nproc-per-node", "2"},
      {"--mode", "ok"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r, "rank 1 of 2 ok")) << r.output;
}

// ---- what --dry-run prints ----

// One platform end to end: the plan, each local worker's variables, the program. plan_test has
// every platform's detector and the bad environments in process.
TEST(Launch, DryRunNamesWhereEachValueCameFrom) {
  auto pytorchjob = RunToEnd({kCohort, "launch", "--dry-run", "--", "./train"},
                             Clean({{"PET_NNODES", "2"},
                                    {"PET_NPROC_PER_NODE", "3"},
                                    {"RANK", "1"},
                                    {"WORLD_SIZE", "6"},
                                    {"MASTER_ADDR", "10.1.2.3"},
                                    {"MASTER_PORT", "29500"},
                                    {"COHORT_TOKEN", "t0k"}}));
  ASSERT_EQ(pytorchjob.exit_code, 0) << pytorchjob.output;
  for (const char* want : {"Kubeflow PyTorchJob", "(PET_NPROC_PER_NODE)", "(PET_NNODES)",
                           "(RANK (a PyTorchJob's node rank))", "10.1.2.3:29500",
                           "(MASTER_ADDR:MASTER_PORT)", "COHORT_RANK=3", "COHORT_RANK=5",
                           "COHORT_WORLD_SIZE=6", "COHORT_TOKEN=***", "program: ./train"}) {
    EXPECT_TRUE(Has(pytorchjob, want)) << want << "\n" << pytorchjob.output;
  }
  EXPECT_FALSE(Has(pytorchjob, "t0k")) << pytorchjob.output;  // the token is never printed
}

// ---- mpirun, with and without the launcher ----

#if COHORT_HAVE_MPI
ProcessResult Mpirun(int n, std::vector<std::string> argv) {
  std::vector<std::string> full = {MPIEXEC, "-np", std::to_string(n), "--bind-to", "none"};
  full.insert(full.end(), argv.begin(), argv.end());
  return RunToEnd(full,
                  Clean({{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
                         {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
                         {"OMPI_MCA_rmaps_base_oversubscribe", "1"}}),
                  90s);
}

TEST(Launch, MpirunWithTheLauncher) {
  auto r = Mpirun(3, LaunchArgs({}, {"--mode", "ok", "--backend", "mpi"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_TRUE(Has(r, fmt::format("[rank {}] rank {} of 3 ok restart 0 backend mpi", rank, rank)))
        << r.output;
  }
}

TEST(Launch, MpirunWithoutTheLauncher) {
  for (const char* backend : {"mpi", "gloo"}) {
    auto r = Mpirun(3, {kWorker, "--mode", "ok", "--backend", backend});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    for (int rank = 0; rank < 3; ++rank) {
      EXPECT_TRUE(Has(r, fmt::format("rank {} of 3 ok restart 0 backend {}", rank, backend)))
          << r.output;
    }
  }
}
#endif

}  // namespace
}  // namespace cohort::testing
