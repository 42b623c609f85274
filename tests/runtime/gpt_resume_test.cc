// Sharded snapshots of the gpt example resumed at another layout, with real processes under
// `cohort launch`: K steps at layout A, a snapshot, then the rest at layout B must give the
// losses of the uninterrupted run (1e-4 relative): pp 2 x tp 2 -> one process (tp 2 -> 1 and
// pp 2 -> 1 at once), one process -> tp 2, one process -> pp 2, dp 2 -> dp 2 x tp 2. A snapshot
// whose shapes cannot map is refused in one line naming the tensor; a damaged newest snapshot
// makes every rank fall back to the one before it together, even when only one rank reads the
// damaged bytes. On S3 (moto, signatures checked) the resumed ranks fetch their slices with
// ranged GETs.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "tests/checkpoint/moto_fixture.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

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
  std::string Uri(const std::string& name) const { return dir_.Uri(name); }

  // n workers under cohort launch (run id "r"), gpt with the small model (--dim 32 unless extra
  // names another), steps and extra.
  ProcessResult Gpt(int n, int64_t steps, const Args& extra,
                    std::map<std::string, std::string> env = {}) {
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
    env.insert({{"COHORT_LOG_LEVEL", "warn"},
                {"OPENBLAS_NUM_THREADS", "1"},
                {"OMP_NUM_THREADS", "1"},
                {"COHORT_CHECKPOINT_URI", ""},
                {"COHORT_RESUME", ""}});
    Subprocess p(argv, env);
    return p.Wait(180s);
  }

  // Steps 1..4 at `save` (n_save workers), a snapshot, steps 5..8 at `resume`: the resumed
  // losses equal `want` (the uninterrupted run's, by step).
  // uri: where snapshots go (default: a file:// folder called name); *resumed gets the
  // resumed run's output.
  void ExpectResumeMatches(const std::map<int, double>& want, int n_save, const Args& save,
                           int n_resume, const Args& resume, const std::string& name,
                           std::string uri = "", const std::map<std::string, std::string>& env = {},
                           std::string* resumed = nullptr) {
    SCOPED_TRACE(name);
    if (uri.empty()) uri = Uri(name);
    Args s = save;
    s.insert(s.end(), {"--checkpoint-uri", uri});
    const ProcessResult first = Gpt(n_save, 4, s, env);
    ASSERT_EQ(first.exit_code, 0) << first.output;
    Args r = resume;
    r.insert(r.end(), {"--checkpoint-uri", uri, "--resume", "latest"});
    const ProcessResult second = Gpt(n_resume, 8, r, env);
    if (resumed) *resumed = second.output;
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

  TestDir dir_{"gpt-resume"};
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

TEST_F(GptResume, OnS3EachRankFetchesItsSlicesWithRangedReads) {
  COHORT_REQUIRE_MOTO(moto);
  const ProcessResult straight = Gpt(1, 8, {});
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const std::string uri = moto->FreshUri("gpt");
  std::map<std::string, std::string> env = moto->Env();
  env["COHORT_LOG_LEVEL"] = "info";  // for the "read N bytes of it" line
  std::string out;
  ExpectResumeMatches(Losses(straight.output), 4, {"--pp", "2", "--tp", "2"}, 2, {"--tp", "2"},
                      "s3-pp2tp2-to-tp2", uri, env, &out);
  // A client we did not write sees what the sharded save wrote: four shards and the manifest.
  const std::string prefix = uri.substr(uri.find('/', 5) + 1) + "/r/step-000000000004/";
  uint64_t shard_bytes = 0;
  int shards = 0, manifests = 0;
  for (const auto& o : moto->AwsList(prefix)) {
    if (o.key.find(".h5") != std::string::npos) ++shards, shard_bytes += o.size;
    manifests += o.key.find("manifest.json") != std::string::npos;
  }
  EXPECT_EQ(shards, 4);
  EXPECT_EQ(manifests, 1);
  // Rank 0 at tp 2 needs half of each cut tensor and the replicated ones: well under the whole.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(\[rank 0\].*read (\d+) bytes of it)")))
      << out;
  const uint64_t read = std::stoull(m[1]);
  EXPECT_GT(read, 0u);
  EXPECT_LT(read, shard_bytes * 3 / 4) << "rank 0 read " << read << " of " << shard_bytes;
  std::printf("rank 0 at tp 2 read %llu of the snapshot's %llu shard bytes\n",
              static_cast<unsigned long long>(read), static_cast<unsigned long long>(shard_bytes));
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
  DamageShard(dir_.path() / "c" / "r" / "step-000000000004", 1);
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
