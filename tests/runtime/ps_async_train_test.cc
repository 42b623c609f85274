// Asynchronous parameter-server training end to end, as users run it: `cohort launch
// --ps-servers 2` starts two `cohort ps-server` shards beside fashion_mnist workers with
// `--ps-mode async`; real processes, real gRPC over 127.0.0.1. The servers run the optimizer;
// their log lines ("lead at most L (staleness S)") are what the staleness checks read.
#include <dirent.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

const std::string kCohort = BinPath("cohort");
const std::string kProgram = BinPath("fashion_mnist");
const std::string kData = "/usr/share/datasets/fashion-mnist";

#define REQUIRE_DATASET()                                              \
  if (!std::filesystem::exists(kData + "/train-images-idx3-ubyte.gz")) \
  GTEST_SKIP() << kData << " is missing: apt-get install dataset-fashion-mnist"

// Variables of the machine running the tests that would change what the launcher derives; the
// servers log at info (their lead lines) every log_every steps.
Env Clean(int log_every) {
  Env e = {{"COHORT_LOG_LEVEL", "info"},
           {"COHORT_PS_LOG_EVERY", std::to_string(log_every)},
           {"OPENBLAS_NUM_THREADS", "1"},
           {"OMP_NUM_THREADS", "1"}};
  for (const char* v : {"COHORT_NNODES",
                        "COHORT_NODE_RANK",
                        "COHORT_NPROC_PER_NODE",
                        "COHORT_RDZV_ENDPOINT",
                        "COHORT_RUN_ID",
                        "COHORT_TOKEN",
                        "COHORT_STORE",
                        "COHORT_RANK",
                        "COHORT_WORLD_SIZE",
                        "COHORT_BACKEND",
                        "COHORT_PS_SERVERS",
                        "COHORT_CHECKPOINT_URI",
                        "COHORT_RESUME",
                        "MASTER_ADDR",
                        "MASTER_PORT",
                        "RANK",
                        "WORLD_SIZE",
                        "OMPI_COMM_WORLD_SIZE",
                        "OMPI_COMM_WORLD_RANK",
                        "SLURM_NTASKS",
                        "SLURM_PROCID"}) {
    e[v] = "";  // empty counts as unset
  }
  return e;
}

std::vector<std::string> Launch(int workers, std::vector<std::string> flags,
                                std::vector<std::string> program_flags) {
  std::vector<std::string> argv = {kCohort, "launch",           "--ps-servers",
                                   "2",     "--nproc-per-node", std::to_string(workers)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.insert(argv.end(), {"--", kProgram, "--ps-mode", "async"});
  argv.insert(argv.end(), program_flags.begin(), program_flags.end());
  return argv;
}

struct Lead {
  int lead = 0;
  std::string bound;
  int64_t waited = 0;
};

// The servers' lines "... lead at most L (staleness S), W pulls waited".
std::vector<Lead> Leads(const std::string& out) {
  std::vector<Lead> leads;
  const std::regex re(R"(lead at most (-?\d+) \(staleness (\w+)\), (\d+) pulls waited)");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it) {
    leads.push_back({std::stoi((*it)[1]), (*it)[2], std::stoll((*it)[3])});
  }
  return leads;
}

double Accuracy(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(\[rank 0\] test accuracy: (\d+\.\d\d)%)")))
    return -1;
  return std::stod(m[1]);
}

// One training run of 4 workers for 2 epochs; returns its accuracy after checking its metrics
// and the servers' lead lines.
double TrainTwoEpochs(const std::string& mode, std::vector<std::string> flags, int bound) {
  const std::string metrics = fmt::format("/tmp/cohort-ps-async-{}-{}.jsonl", mode, ::getpid());
  flags.insert(flags.end(), {"--epochs", "2", "--metrics", metrics});
  Subprocess p(Launch(4, {}, flags), Clean(100));
  const ProcessResult r = p.Wait(400s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("on 4 worker(s) (gloo, ps async " + mode), std::string::npos) << r.output;
  const double accuracy = Accuracy(r.output);
  std::ifstream in(metrics);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  std::filesystem::remove(metrics);
  EXPECT_GE(lines.size(), 2u);
  if (!lines.empty()) {
    EXPECT_EQ(lines.back()["step"], 470);  // 60000 / 4 workers / 64, twice
    EXPECT_TRUE(lines.back().contains("ps_staleness")) << lines.back().dump();
  }
  const std::vector<Lead> leads = Leads(r.output);
  EXPECT_GE(leads.size(), 4u) << r.output;  // 470 steps, a line per 100, on each partition
  for (const Lead& l : leads) {
    EXPECT_EQ(l.bound, bound < 0 ? "none" : std::to_string(bound));
    if (bound >= 0) {
      EXPECT_LE(l.lead, bound);
    }
  }
  std::printf("fashion_mnist, 4 workers, ps async %s, 2 epochs: %.2f%% in %.1f s\n", mode.c_str(),
              accuracy, r.seconds);
  return accuracy;
}

// Both modes in one test, back to back (each is a whole training run on this small machine).
TEST(PsAsyncFashionMnist, AspAndSspReachTheAccuracyTargetInTwoEpochs) {
  REQUIRE_DATASET();
  EXPECT_GE(TrainTwoEpochs("ASP", {}, -1), 85.0);
  EXPECT_GE(TrainTwoEpochs("SSP 2", {"--staleness", "2"}, 2), 85.0);
}

// Rank 3 sleeps 40 ms a step: without the bound the others would run far ahead. Pipelined
// (--ps-pipeline) the servers hold each answer for the step it is used for, one later.
void ExpectTheBoundHoldsTheFastest(std::vector<std::string> flags, const std::string& banner) {
  flags.insert(flags.end(), {"--staleness", "2", "--max-steps", "60", "--slow-rank", "3",
                             "--slow-ms", "40", "--progress-interval", "1000"});
  Subprocess p(Launch(4, {}, flags), Clean(5));
  const ProcessResult r = p.Wait(120s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(banner), std::string::npos) << r.output;
  const std::vector<Lead> leads = Leads(r.output);
  ASSERT_GE(leads.size(), 10u) << r.output;  // 60 steps, a line per 5, on 2 partitions
  int max_lead = 0;
  int64_t waited = 0;
  for (const Lead& l : leads) {
    EXPECT_EQ(l.bound, "2");
    EXPECT_LE(l.lead, 2) << "a worker ran more than 2 steps ahead of the slowest:\n" << r.output;
    max_lead = std::max(max_lead, l.lead);
    waited += l.waited;
  }
  // The bound was what held them: the fast workers reached it and waited for rank 3.
  EXPECT_EQ(max_lead, 2) << r.output;
  EXPECT_GT(waited, 60) << r.output;
}

TEST(PsAsyncFashionMnist, ASlowWorkerHoldsTheFastestToTheStalenessBound) {
  REQUIRE_DATASET();
  ExpectTheBoundHoldsTheFastest({}, "ps async SSP 2)");
}

TEST(PsAsyncFashionMnist, ASlowWorkerHoldsTheFastestToTheBoundWhenPipelined) {
  REQUIRE_DATASET();
  ExpectTheBoundHoldsTheFastest({"--ps-pipeline"}, "ps async SSP 2 pipelined)");
}

// The pids of the running fashion_mnist workers whose command line holds marker.
std::vector<pid_t> Workers(const std::string& marker) {
  std::vector<pid_t> pids;
  DIR* proc = ::opendir("/proc");
  while (dirent* e = proc ? ::readdir(proc) : nullptr) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream in(fmt::format("/proc/{}/cmdline", pid));
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(kProgram) == 0 && cmd.find(marker) != std::string::npos) pids.push_back(pid);
  }
  if (proc) ::closedir(proc);
  return pids;
}

// "ps async: the servers' state at step K: <fingerprint>" and, after the restart, "pushed at
// step K: <fingerprint>": the state a snapshot saved is the state the servers got back.
void ExpectAKilledJobResumesWithTheServersStateOfItsSnapshot(const std::string& flag) {
  const std::string dir = fmt::format("/tmp/cohort-ps-async-ckpt-{}", ::getpid());
  const std::string metrics = dir + ".jsonl";  // also what tells this test's workers apart
  std::filesystem::remove_all(dir);
  Subprocess p(Launch(2, {"--max-restarts", "1", "--checkpoint-uri", "file://" + dir},
                      {"--optimizer", "adam", "--checkpoint-every", "20", "--max-steps", "200",
                       "--progress-interval", "1000", "--metrics", metrics, flag}),
               Clean(1000));
  ASSERT_TRUE(p.AwaitLine("step-000000000040 complete", 120s)) << p.Output();
  const std::vector<pid_t> workers = Workers(metrics);
  ASSERT_EQ(workers.size(), 2u) << p.Output();
  ::kill(workers[1], SIGKILL);
  const ProcessResult r = p.Wait(180s);
  std::filesystem::remove_all(dir);
  std::filesystem::remove(metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch resumed;
  ASSERT_TRUE(std::regex_search(
      r.output, resumed, std::regex(R"(pushed at step ([1-9]\d*): (parameter checksum [^\n]*))")))
      << "no resume pushed the snapshot's state back:\n"
      << r.output;
  const std::string saved =
      fmt::format("the servers' state at step {}: {}", resumed[1].str(), resumed[2].str());
  EXPECT_NE(r.output.find(saved), std::string::npos)
      << "the resumed state differs from the saved one; resumed: " << resumed[0] << "\n"
      << r.output;
  EXPECT_GE(std::stoi(resumed[1]), 40);
  EXPECT_NE(r.output.find("optimizer state checksum"), std::string::npos);
  EXPECT_NE(r.output.find("[rank 0] trained"), std::string::npos) << r.output;
  std::printf("killed after the snapshot of step 40; resumed: %s\n", resumed[0].str().c_str());
}

TEST(PsAsyncFashionMnist, AKilledJobResumesWithTheServersStateOfItsSnapshot) {
  REQUIRE_DATASET();
  ExpectAKilledJobResumesWithTheServersStateOfItsSnapshot("--staleness=-1");
}

// Pipelined, the push out is answered before the servers' state is fetched for the snapshot.
TEST(PsAsyncFashionMnist, APipelinedKilledJobResumesWithTheServersStateOfItsSnapshot) {
  REQUIRE_DATASET();
  ExpectAKilledJobResumesWithTheServersStateOfItsSnapshot("--ps-pipeline");
}

}  // namespace
}  // namespace cohort::testing
