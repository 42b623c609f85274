// The gpt example end to end, as users run it: `cohort launch` starts 4 workers at pp 2 x tp 2
// (and dp 2 x tp 2, dp 2 x pp 2), whose per-step losses must equal one process training the same model on the
// same global batch to within 1e-4 relative; its one-line errors for layouts that cannot work.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <string>
#include <vector>

#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

const std::string kCohort = BinPath("cohort");
const std::string kGpt = BinPath("gpt");

Env Clean() {
  Env e = {{"COHORT_LOG_LEVEL", "warn"}, {"OPENBLAS_NUM_THREADS", "1"}};
  for (const char* v : {"COHORT_NNODES", "COHORT_NODE_RANK", "COHORT_NPROC_PER_NODE",
                        "COHORT_RUN_ID", "COHORT_TOKEN", "COHORT_STORE", "COHORT_RANK",
                        "COHORT_WORLD_SIZE", "COHORT_BACKEND", "MASTER_ADDR", "MASTER_PORT",
                        "RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"}) {
    e[v] = "";
  }
  return e;
}

// The losses rank 0 printed with --print-losses, by step.
std::vector<double> Losses(const std::string& out) {
  std::vector<double> losses;
  const std::regex re(R"(step (\d+) loss ([0-9.eE+-]+))");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    losses.push_back(std::stod((*it)[2]));
  }
  return losses;
}

const std::vector<std::string> kSmall = {"--max-steps", "6",   "--print-losses", "--layers",
                                         "2",           "--dim", "32",           "--context",
                                         "32",          "--batch-size", "8"};

ProcessResult OneProcess(std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {kGpt};
  argv.insert(argv.end(), kSmall.begin(), kSmall.end());
  argv.insert(argv.end(), extra.begin(), extra.end());
  Subprocess p(argv, Clean());
  return p.Wait(120s);
}

ProcessResult Launch(int n, std::vector<std::string> layout) {
  std::vector<std::string> argv = {kCohort, "launch", "--nproc-per-node", std::to_string(n), "--",
                                   kGpt};
  argv.insert(argv.end(), kSmall.begin(), kSmall.end());
  argv.insert(argv.end(), layout.begin(), layout.end());
  Subprocess p(argv, Clean());
  return p.Wait(180s);
}

void ExpectSameLosses(const std::vector<double>& want, const ProcessResult& got) {
  const std::vector<double> losses = Losses(got.output);
  ASSERT_EQ(losses.size(), want.size()) << got.output;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(losses[i], want[i], 1e-4 * std::abs(want[i])) << "step " << i + 1 << "\n"
                                                              << got.output;
  }
}

TEST(Gpt, PipelineTimesTensorParallelMatchesOneProcess) {
  const ProcessResult one = OneProcess();
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::vector<double> want = Losses(one.output);
  ASSERT_EQ(want.size(), 6u) << one.output;
  EXPECT_LT(want.back(), want.front()) << "the loss must fall\n" << one.output;
  for (const char* schedule : {"1f1b", "gpipe"}) {
    SCOPED_TRACE(schedule);
    const ProcessResult r = Launch(4, {"--pp", "2", "--tp", "2", "--schedule", schedule});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("layout dp=1,pp=2,tp=2"), std::string::npos) << r.output;
    ExpectSameLosses(want, r);
  }
  // Three stages of uneven size (4 units: embedding, 2 blocks, head) over three processes.
  const ProcessResult r3 = Launch(3, {"--pp", "3", "--micro-batches", "5"});
  ASSERT_EQ(r3.exit_code, 0) << r3.output;
  ExpectSameLosses(want, r3);
}

TEST(Gpt, DataParallelReplicasAverageTheirShares) {
  // Replicas read disjoint shares of each epoch (the sampler's), so the reference for a layout
  // with dp 2 is plain data parallelism at dp 2; pipeline stages or tensor-parallel ranks inside
  // each replica must not change a single loss.
  const ProcessResult dp = Launch(2, {"--dp", "2"});
  ASSERT_EQ(dp.exit_code, 0) << dp.output;
  const std::vector<double> want = Losses(dp.output);
  ASSERT_EQ(want.size(), 6u) << dp.output;
  for (const std::string inner : {"--tp", "--pp"}) {
    SCOPED_TRACE(inner);
    const ProcessResult r = Launch(4, {"--dp", "2", inner, "2"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ExpectSameLosses(want, r);
  }
}

TEST(Gpt, LayoutsThatCannotWorkAreOneLineErrors) {
  const ProcessResult bad_tp = OneProcess({"--tp", "3"});
  EXPECT_EQ(bad_tp.exit_code, 2) << bad_tp.output;
  EXPECT_NE(bad_tp.output.find("gpt: --dp 0 x --pp 1 x --tp 3"), std::string::npos)
      << bad_tp.output;
  const ProcessResult heads = Launch(3, {"--tp", "3"});
  EXPECT_NE(heads.exit_code, 0) << heads.output;
  EXPECT_NE(heads.output.find("--heads = 4 is not divisible by --tp 3"), std::string::npos)
      << heads.output;
}

}  // namespace
}  // namespace cohort::testing
