// Pipeline parallelism between real processes: Gloo workers started directly with the env
// contract, one configuration also under mpirun, meeting at a gRPC store hosted here.
// pipeline_worker checks the numbers (the pipeline against the whole model trained in one
// process); this test checks that every rank reported success, and for the failure cases that
// every surviving rank failed in time with an error that names the stages.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <regex>

#include "collectives/config.h"
#include "collectives/store/grpc_store_server.h"
#include "tests/util/subprocess.h"
#include "tests/util/world.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kToken[] = "pipeline-test-token";

class PipelineProcs : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<collectives::GrpcStoreServer>("127.0.0.1", 0, kToken);
    server_->Start();
  }

  std::map<std::string, std::string> Env(const std::string& backend) const {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return {{"COHORT_STORE", fmt::format("127.0.0.1:{}", server_->Port())},
            {"COHORT_TOKEN", kToken},
            {"COHORT_STORE_TIMEOUT", "30"},
            {"COHORT_TIMEOUT", "20"},
            {"COHORT_BACKEND", backend},
            {"COHORT_RUN_ID", std::string("pp-") + info->name()},
            {"COHORT_LOG_LEVEL", "error"},
            {"OPENBLAS_NUM_THREADS", "1"},
            {"OMP_NUM_THREADS", "1"}};
  }

  // Every rank's output (MPI: one entry holding all ranks).
  std::vector<ProcessResult> Run(int world, const std::vector<std::string>& args,
                                 const std::string& backend = "gloo") {
    std::vector<std::string> worker = {BinPath("pipeline_worker")};
    worker.insert(worker.end(), args.begin(), args.end());
    return RunWorld(backend, world, worker, Env(backend), 120s);
  }

  // Runs configs and expects every rank to succeed with one RESULT line per config.
  void ExpectEquivalent(int world, const std::vector<std::string>& configs,
                        const std::vector<std::string>& extra = {},
                        const std::string& backend = "gloo") {
    std::vector<std::string> args = {"--mode", "equiv"};
    for (const auto& c : configs) args.insert(args.end(), {"--configs", c});
    args.insert(args.end(), extra.begin(), extra.end());
    std::string all;
    for (const auto& r : Run(world, args, backend)) {
      all += r.output;
      EXPECT_FALSE(r.timed_out) << r.output;
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
    const std::regex line("RESULT rank=\\d+ config=");
    const auto lines =
        std::distance(std::sregex_iterator(all.begin(), all.end(), line), std::sregex_iterator());
    EXPECT_EQ(lines, static_cast<long>(world * configs.size())) << all;
  }

  std::unique_ptr<collectives::GrpcStoreServer> server_;
};

// GPipe and 1F1B x micro-batches 1, 4, 7 x balanced and uneven stages, on `stages` processes.
std::vector<std::string> Grid(const std::string& uneven) {
  std::vector<std::string> configs;
  for (const char* schedule : {"gpipe", "1f1b"}) {
    for (int m : {1, 4, 7}) {
      for (const std::string& b : {std::string("bal"), uneven}) {
        configs.push_back(fmt::format("{}:{}:{}", schedule, m, b));
      }
    }
  }
  return configs;
}

TEST_F(PipelineProcs, TwoStagesEqualOneProcess) { ExpectEquivalent(2, Grid("2")); }
TEST_F(PipelineProcs, ThreeStagesEqualOneProcess) { ExpectEquivalent(3, Grid("1,6")); }
TEST_F(PipelineProcs, FourStagesEqualOneProcess) { ExpectEquivalent(4, Grid("1,2,7")); }

TEST_F(PipelineProcs, MpiThreeStagesEqualOneProcess) {
#if !COHORT_HAVE_MPI
  GTEST_SKIP() << "built without MPI (COHORT_WITH_MPI=OFF)";
#endif
  ExpectEquivalent(3, {"1f1b:4:1,6", "gpipe:7:bal"}, {}, "mpi");
}

// Two replicas of a two-stage pipeline: DDP over each stage's dp group.
TEST_F(PipelineProcs, DataParallelTimesPipelineEqualsOneProcess) {
  ExpectEquivalent(4, {"1f1b:4:3", "gpipe:7:bal"}, {"--layout", "dp=2,pp=2"});
}

// Stage 1 of 4 SIGKILLs itself mid-step: every other stage fails well within COHORT_TIMEOUT
// (20 s), and every error names the dead stage and its global rank.
TEST_F(PipelineProcs, KilledStageFailsEveryStageNamingIt) {
  const auto results = Run(4, {"--mode", "kill", "--victim", "1", "--steps", "50"});
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[1].signal, 9) << results[1].output;
  const std::regex failed("FAILED after ([0-9.]+) s: (.*)");
  for (int r : {0, 2, 3}) {
    const auto& res = results[r];
    EXPECT_FALSE(res.timed_out) << res.output;
    EXPECT_EQ(res.exit_code, 3) << res.output;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(res.output, m, failed)) << res.output;
    EXPECT_LT(std::stod(m[1]), 20.0) << res.output;
    const std::string error = m[2];
    EXPECT_NE(error.find(fmt::format("pipeline stage {} (global rank {})", r, r)),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("stage 1 (global rank 1)"), std::string::npos) << error;
  }
}

// A declared input shape that the previous stage does not send: one line naming both stages.
TEST_F(PipelineProcs, DeclaredShapeMismatchNamesBothStages) {
  const auto results = Run(2, {"--mode", "mismatch", "--declared"});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].exit_code, 3) << results[1].output;
  EXPECT_NE(results[1].output.find("FAILED: pipeline stage 1 (global rank 1) expects input "
                                   "[*, 10] Float but stage 0 (global rank 0) sends [*, 12] "
                                   "Float"),
            std::string::npos)
      << results[1].output;
  // Stage 0 fails too, quoting stage 1's error.
  EXPECT_EQ(results[0].exit_code, 3) << results[0].output;
  EXPECT_NE(results[0].output.find("expects input [*, 10]"), std::string::npos)
      << results[0].output;
}

// No declaration: torch's own shape error in stage 1's forward, wrapped to name both stages.
TEST_F(PipelineProcs, ForwardShapeErrorNamesBothStages) {
  const auto results = Run(2, {"--mode", "mismatch"});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].exit_code, 3) << results[1].output;
  const std::regex one_line(
      "FAILED: pipeline stage 1 \\(global rank 1\\): forward of micro-batch 0 failed on the "
      "input from stage 0 \\(global rank 0\\) \\[7, 12\\] Float: [^\\n]*mat1 and mat2");
  EXPECT_TRUE(std::regex_search(results[1].output, one_line)) << results[1].output;
  EXPECT_EQ(results[0].exit_code, 3) << results[0].output;
}

// The Trainer's pluggable step runs the pipeline: losses equal one process's, and a stop asked
// of stage 1 stops both stages after the same step.
TEST_F(PipelineProcs, TrainerRunsThePipelineAndStops) {
  const auto results = Run(2, {"--mode", "trainer", "--steps", "20", "--stop-at", "4"});
  const std::regex line("TRAINER rank=(\\d) steps=(\\d+) last_loss=([0-9.]+)");
  std::set<std::string> last_losses;
  for (const auto& r : results) {
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.output, m, line)) << r.output;
    EXPECT_EQ(m[2], "4") << r.output;
    last_losses.insert(m[3]);
  }
  EXPECT_EQ(last_losses.size(), 1u);
}

}  // namespace
}  // namespace cohort::testing
