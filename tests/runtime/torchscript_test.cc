// examples/torchscript end to end: `cohort launch --nproc-per-node 2 -- torchscript_train`, then
// the saved model loaded back by Python's torch.jit.load. Checks that the loss dropped, that the
// ranks ended with the same parameters, and that the saved file holds exactly those.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

#ifdef COHORT_HAVE_TORCHSCRIPT_EXAMPLE

// What a rank printed at the end.
struct RankResult {
  double before = 0, after = 0;
  std::string checksum;
};

std::map<int, RankResult> Parse(const std::string& output) {
  // "[rank 1] rank 1 eval loss before 0.51 after 0.02 checksum 1.234e+00" under the launcher,
  // without the prefix alone.
  static const std::regex line(
      R"(rank (\d+) eval loss before ([0-9.eE+-]+) after ([0-9.eE+-]+) checksum (\S+))");
  std::map<int, RankResult> out;
  for (std::sregex_iterator it(output.begin(), output.end(), line), end; it != end; ++it) {
    out[std::stoi((*it)[1])] = {std::stod((*it)[2]), std::stod((*it)[3]), (*it)[4]};
  }
  return out;
}

Env Clean() {
  Env e = {{"COHORT_LOG_LEVEL", "warn"}, {"OPENBLAS_NUM_THREADS", "1"}, {"OMP_NUM_THREADS", "1"}};
  for (const char* v :
       {"COHORT_RANK", "COHORT_WORLD_SIZE", "COHORT_STORE", "COHORT_TOKEN", "COHORT_RUN_ID",
        "COHORT_BACKEND", "COHORT_NNODES", "COHORT_NODE_RANK", "COHORT_NPROC_PER_NODE",
        "COHORT_RDZV_ENDPOINT", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
        "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "JOB_COMPLETION_INDEX", "PET_NNODES"}) {
    e[v] = "";
  }
  return e;
}

class MultiprocTorchScript : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("cohort-torchscript-test-{}", ::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Loads path with Python's torch and returns what it printed: the checksum line and the
  // shape of a forward pass.
  ProcessResult LoadInPython(const std::string& path) {
    const std::string script =
        "import sys, torch\n"
        "m = torch.jit.load(sys.argv[1])\n"
        "s = sum(p.double().sum().item() for p in m.parameters())\n"
        "print('checksum %.12e' % s)\n"
        "print('output', list(m(torch.zeros(3, m.in_features)).shape))\n";
    Subprocess p({COHORT_TORCH_PYTHON, "-c", script, path}, {});
    return p.Wait(120s);
  }

  std::filesystem::path dir_;
};

TEST_F(MultiprocTorchScript, TwoWorkersUnderCohortLaunchTrainAndSaveAModelPythonLoads) {
  const std::string out = (dir_ / "trained.pt").string();
  Subprocess p({BinPath("cohort"), "launch", "--nproc-per-node", "2", "--",
                BinPath("torchscript_train"), "--steps", "300", "--out", out},
               Clean());
  const ProcessResult r = p.Wait(150s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ranks = Parse(r.output);
  ASSERT_EQ(ranks.size(), 2u) << r.output;
  for (const auto& [rank, res] : ranks) {
    // Training worked: the held-out loss fell to well under half.
    EXPECT_LT(res.after, 0.5 * res.before) << "rank " << rank << "\n" << r.output;
  }
  // DDP kept the replicas identical, and both evaluated the same model the same way.
  EXPECT_EQ(ranks.at(0).checksum, ranks.at(1).checksum) << r.output;
  EXPECT_EQ(ranks.at(0).after, ranks.at(1).after) << r.output;
  EXPECT_NE(r.output.find("[rank 0] step 300/300 loss"), std::string::npos) << r.output;

  ASSERT_TRUE(std::filesystem::exists(out)) << r.output;
  const ProcessResult py = LoadInPython(out);
  ASSERT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("checksum " + ranks.at(0).checksum), std::string::npos)
      << "saved model differs from the trained one: " << py.output << "\n"
      << r.output;
  EXPECT_NE(py.output.find("output [3, 1]"), std::string::npos) << py.output;
}

TEST_F(MultiprocTorchScript, AloneItTrainsWithoutALauncher) {
  const std::string out = (dir_ / "alone.pt").string();
  Subprocess p({BinPath("torchscript_train"), "--steps", "150", "--out", out}, Clean());
  const ProcessResult r = p.Wait(120s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ranks = Parse(r.output);
  ASSERT_EQ(ranks.size(), 1u) << r.output;
  EXPECT_LT(ranks.at(0).after, 0.5 * ranks.at(0).before) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out)) << r.output;
}

TEST_F(MultiprocTorchScript, AMissingModelFileIsOneClearError) {
  Subprocess p({BinPath("torchscript_train"), "--model", (dir_ / "nope.pt").string()}, Clean());
  const ProcessResult r = p.Wait(60s);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("torchscript_train: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("nope.pt"), std::string::npos) << r.output;
}

#else

TEST(MultiprocTorchScript, Skipped) {
  GTEST_SKIP() << "examples/torchscript was not built (its Python cannot import torch)";
}

#endif

}  // namespace
}  // namespace cohort::testing
