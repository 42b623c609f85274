// Sharded snapshots of the gpt example resumed at another layout, with real processes under
// `cohort launch`: K steps at layout A, a snapshot, then the rest at layout B must give the
// losses of the uninterrupted run (1e-4 relative): pp 2 x tp 2 -> one process (tp 2 -> 1 and
// pp 2 -> 1 at once), one process -> tp 2, one process -> pp 2, dp 2 -> dp 2 x tp 2. A snapshot
// whose shapes cannot map is refused in one line naming the tensor; a damaged newest snapshot
// makes every rank fall back to the one before it together, even when only one rank reads the
// damaged bytes.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Args = std::vector<std::string>;

const Args kModel = {"--print-losses", "--layers", "2", "--context", "32", "--batch-size", "8"};

// Losses rank 0 printed, by step number.
std::map<int, double> Losses(const std::string& out) {
  std::map<int, double> losses;
  const std::regex re(R"(step (\d+) loss ([0-9.eE+-]+))");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    losses[std::stoi((*it)[1])] = std::stod((*it)[2]);
  }
  return losses;
}

class GptResume : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("cohort-gpt-resume-{}-{}", getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string Uri(const std::string& name) const { return "file://" + (dir_ / name).string(); }

  // n workers under cohort launch (run id "r"), gpt with the small model (--dim 32 unless extra
  // names another), steps and extra.
  ProcessResult Gpt(int n, int64_t steps, const Args& extra) {
    Args argv = {BinPath("cohort"),
                 "launch",
                 "--nproc-per-node",
                 std::to_string(n),
                 "--run-id",
                 "r",
                 "--",
                 BinPath("gpt"),
                 "--max-steps",
                 std::to_string(steps)};
    argv.insert(argv.end(), kModel.begin(), kModel.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (std::find(extra.begin(), extra.end(), "--dim") == extra.end()) {
      argv.insert(argv.end(), {"--dim", "32"});
    }
    Subprocess p(argv, {{"COHORT_LOG_LEVEL", "warn"},
                        {"OPENBLAS_NUM_THREADS", "1"},
                        {"OMP_NUM_THREADS", "1"},
                        {"COHORT_CHECKPOINT_URI", ""},
                        {"COHORT_RESUME", ""}});
    return p.Wait(180s);
  }

  // Steps 1..4 at `save` (n_save workers), a snapshot, steps 5..8 at `resume`: the resumed
  // losses equal `want` (the uninterrupted run's, by step).
  void ExpectResumeMatches(const std::map<int, double>& want, int n_save, const Args& save,
                           int n_resume, const Args& resume, const std::string& name) {
    SCOPED_TRACE(name);
    Args s = save;
    s.insert(s.end(), {"--checkpoint-uri", Uri(name)});
    const ProcessResult first = Gpt(n_save, 4, s);
    ASSERT_EQ(first.exit_code, 0) << first.output;
    Args r = resume;
    r.insert(r.end(), {"--checkpoint-uri", Uri(name), "--resume", "latest"});
    const ProcessResult second = Gpt(n_resume, 8, r);
    ASSERT_EQ(second.exit_code, 0) << second.output;
    EXPECT_NE(second.output.find("resumed from step 4"), std::string::npos) << second.output;
    const std::map<int, double> got = Losses(second.output);
    ASSERT_EQ(got.size(), 4u) << second.output;
    for (const auto& [step, loss] : got) {
      ASSERT_TRUE(want.count(step)) << "step " << step << "\n" << second.output;
      EXPECT_NEAR(loss, want.at(step), 1e-4 * std::abs(want.at(step))) << "step " << step << "\n"
                                                                       << second.output;
    }
  }

  fs::path dir_;
};

TEST_F(GptResume, AnotherLayoutContinuesTheUninterruptedRun) {
  const ProcessResult straight = Gpt(1, 8, {});
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const std::map<int, double> want = Losses(straight.output);
  ASSERT_EQ(want.size(), 8u) << straight.output;
  ExpectResumeMatches(want, 4, {"--pp", "2", "--tp", "2"}, 1, {}, "pp2tp2-to-1");
  ExpectResumeMatches(want, 1, {}, 2, {"--tp", "2"}, "1-to-tp2");
  ExpectResumeMatches(want, 1, {}, 2, {"--pp", "2"}, "1-to-pp2");
}

TEST_F(GptResume, DataParallelReplicasReshardToo) {
  const ProcessResult straight = Gpt(2, 8, {"--dp", "2"});
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const std::map<int, double> want = Losses(straight.output);
  ASSERT_EQ(want.size(), 8u) << straight.output;
  ExpectResumeMatches(want, 2, {"--dp", "2"}, 4, {"--dp", "2", "--tp", "2"}, "dp2-to-dp2tp2");
}

TEST_F(GptResume, ShapesThatCannotMapAreRefusedInOneLine) {
  const ProcessResult first = Gpt(1, 2, {"--checkpoint-uri", Uri("c")});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const ProcessResult wider =
      Gpt(1, 4, {"--checkpoint-uri", Uri("c"), "--resume", "latest", "--dim", "64"});
  EXPECT_NE(wider.exit_code, 0) << wider.output;
  EXPECT_TRUE(std::regex_search(wider.output, std::regex(R"(gpt: .*model/\S+.*\[.*32.*\])")))
      << wider.output;
  EXPECT_EQ(Losses(wider.output).size(), 0u) << "it must not train\n" << wider.output;
}

// Flips a byte inside the first global tensor the manifest lists in rank `rank`'s shard.
void DamageShard(const fs::path& snapshot, int rank) {
  std::ifstream in(snapshot / "manifest.json");
  const nlohmann::json m = nlohmann::json::parse(in);
  for (const auto& [name, t] : m.at("layout").at("tensors").items()) {
    for (const auto& s : t.at("shards")) {
      if (s.at("rank").get<int>() != rank) continue;
      const fs::path file = snapshot / fmt::format("rank-{}.h5", rank);
      std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
      const auto at = static_cast<std::streamoff>(s.at("offset").get<uint64_t>() + 3);
      f.seekg(at);
      char c = 0;
      f.read(&c, 1);
      c = static_cast<char>(c ^ 0x5a);
      f.seekp(at);
      f.write(&c, 1);
      return;
    }
  }
  FAIL() << "rank " << rank << " holds no global tensor in " << snapshot;
}

TEST_F(GptResume, DamagedNewestSnapshotFallsBackOnEveryRank) {
  const ProcessResult straight = Gpt(2, 8, {"--pp", "2"});
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const std::map<int, double> want = Losses(straight.output);
  const ProcessResult first =
      Gpt(2, 4, {"--pp", "2", "--checkpoint-uri", Uri("c"), "--checkpoint-every", "2"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // Stage 1's shard of step 4: at pp 2 again, only rank 1 reads those bytes.
  DamageShard(dir_ / "c" / "r" / "step-000000000004", 1);
  const ProcessResult second =
      Gpt(2, 8, {"--pp", "2", "--checkpoint-uri", Uri("c"), "--resume", "latest"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("step-000000000004 is damaged"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("resumed from step 2"), std::string::npos) << second.output;
  const std::map<int, double> got = Losses(second.output);
  ASSERT_EQ(got.size(), 6u) << second.output;
  for (const auto& [step, loss] : got) {
    EXPECT_NEAR(loss, want.at(step), 1e-4 * std::abs(want.at(step))) << "step " << step;
  }
}

}  // namespace
}  // namespace cohort::testing
