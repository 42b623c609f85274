// Checkpoints through the Trainer and the real launcher: continuation is exact (2K steps
// straight == K steps, resume, K steps, bitwise) on file:// and s3:// (moto, signatures checked);
// a snapshot taken on 2 workers resumes on 4 and matches one process; the launcher's restart
// resumes from `latest`; SIGTERM leaves a snapshot; a corrupt newest snapshot falls back to the
// previous one. The training program is ckpt_train_worker.cc.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "tests/checkpoint/moto_fixture.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class CheckpointResume : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("cohort-ckpt-resume-{}-{}", getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::string FileUri() const { return "file://" + (dir_ / "ckpt").string(); }
  std::string Dump(const std::string& name) const { return (dir_ / name).string(); }

  // cohort launch --nproc-per-node n [launch flags] -- ckpt_train_worker [worker flags]
  std::unique_ptr<Subprocess> Start(int n, std::vector<std::string> launch,
                                    std::vector<std::string> worker,
                                    std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv = {BinPath("cohort"), "launch",   "--nproc-per-node",
                                     std::to_string(n), "--run-id", "run1"};
    argv.insert(argv.end(), launch.begin(), launch.end());
    argv.push_back("--");
    argv.push_back(BinPath("ckpt_train_worker"));
    argv.insert(argv.end(), worker.begin(), worker.end());
    env.emplace("COHORT_LOG_LEVEL", "warn");
    env.emplace("OMP_NUM_THREADS", "1");
    env.emplace("OPENBLAS_NUM_THREADS", "1");
    return std::make_unique<Subprocess>(argv, env);
  }
  ProcessResult Run(int n, std::vector<std::string> launch, std::vector<std::string> worker,
                    std::map<std::string, std::string> env = {}) {
    return Start(n, std::move(launch), std::move(worker), std::move(env))->Wait(120s);
  }

  // 12 steps straight, and 6 + resume + 6, with snapshots every 2 steps at uri.
  void ExpectExactContinuation(const std::string& uri,
                               const std::map<std::string, std::string>& env) {
    auto straight = Run(2, {}, {"--steps", "12", "--dump", Dump("straight")}, env);
    ASSERT_EQ(straight.exit_code, 0) << straight.output;
    auto first = Run(2, {"--checkpoint-uri", uri}, {"--steps", "6"},
                     Merge(env, {{"COHORT_CHECKPOINT_EVERY", "2"}}));
    ASSERT_EQ(first.exit_code, 0) << first.output;
    auto second = Run(2, {"--checkpoint-uri", uri, "--resume", "latest"},
                      {"--steps", "12", "--dump", Dump("resumed")},
                      Merge(env, {{"COHORT_CHECKPOINT_EVERY", "2"}}));
    ASSERT_EQ(second.exit_code, 0) << second.output;
    EXPECT_NE(second.output.find("resumed from step 6"), std::string::npos) << second.output;
    EXPECT_EQ(second.output.find("] step 6\n"), std::string::npos) << "step 6 ran twice";
    const std::string a = ReadFile(Dump("straight")), b = ReadFile(Dump("resumed"));
    ASSERT_EQ(a.size(), (13 * 32 + 32 + 32 * 5 + 5) * sizeof(float));
    EXPECT_TRUE(a == b) << "parameters after resume differ from the straight run";
  }

  static std::map<std::string, std::string> Merge(std::map<std::string, std::string> a,
                                                  const std::map<std::string, std::string>& b) {
    for (const auto& [k, v] : b) a[k] = v;
    return a;
  }

  fs::path dir_;
};

TEST_F(CheckpointResume, ContinuationIsBitwiseExactOnFile) {
  ExpectExactContinuation(FileUri(), {});
}

TEST_F(CheckpointResume, ContinuationIsBitwiseExactOnS3) {
  COHORT_REQUIRE_MOTO(moto);
  const std::string uri = moto->FreshUri("resume");
  ExpectExactContinuation(uri, moto->Env());
  // A client we did not write sees the snapshots: manifest, shards and `latest`.
  const std::string prefix = uri.substr(uri.find('/', 5) + 1) + "/run1/";
  auto objects = moto->AwsList(prefix);
  int manifests = 0, shards = 0;
  for (const auto& o : objects) {
    if (o.key.find("manifest.json") != std::string::npos) ++manifests;
    if (o.key.find(".h5") != std::string::npos) ++shards;
  }
  EXPECT_GE(manifests, 3);  // keep=3 (default) complete snapshots remain
  EXPECT_EQ(shards, 2 * manifests);
  auto latest = moto->AwsGet(prefix + "latest");
  ASSERT_TRUE(latest.has_value());
  EXPECT_NE(latest->find("step-000000000012"), std::string::npos) << *latest;
}

TEST_F(CheckpointResume, SnapshotOfTwoWorkersResumesOnFourAndMatchesOneProcess) {
  // The same global batch (8) at every world size: the union of a step's batches is the same.
  auto single = Run(1, {}, {"--steps", "10", "--dropout", "0", "--dump", Dump("single")});
  ASSERT_EQ(single.exit_code, 0) << single.output;
  auto two = Run(2, {"--checkpoint-uri", FileUri()}, {"--steps", "5", "--dropout", "0"});
  ASSERT_EQ(two.exit_code, 0) << two.output;
  auto four = Run(4, {"--checkpoint-uri", FileUri(), "--resume", "latest"},
                  {"--steps", "10", "--dropout", "0", "--dump", Dump("four")});
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_NE(four.output.find("resumed from step 5"), std::string::npos) << four.output;
  const std::string a = ReadFile(Dump("single")), b = ReadFile(Dump("four"));
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 0u);
  const float* x = reinterpret_cast<const float*>(a.data());
  const float* y = reinterpret_cast<const float*>(b.data());
  double max_diff = 0;
  for (size_t i = 0; i < a.size() / sizeof(float); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(x[i] - y[i])));
  }
  EXPECT_LE(max_diff, 1e-5);
}

TEST_F(CheckpointResume, LauncherRestartResumesFromLatest) {
  auto straight = Run(2, {}, {"--steps", "12", "--dump", Dump("straight")});
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  // Rank 1 dies at step 7 of the first attempt; the newest complete snapshot is of step 6, or
  // of step 4 when the save of step 6 was still in flight (saves are asynchronous).
  auto crashed = Run(2, {"--checkpoint-uri", FileUri(), "--max-restarts", "1"},
                     {"--steps", "12", "--crash-at", "7", "--dump", Dump("restarted")},
                     {{"COHORT_CHECKPOINT_EVERY", "2"}});
  ASSERT_EQ(crashed.exit_code, 0) << crashed.output;
  EXPECT_TRUE(crashed.output.find("resumed from step 6") != std::string::npos ||
              crashed.output.find("resumed from step 4") != std::string::npos)
      << crashed.output;
  EXPECT_TRUE(ReadFile(Dump("straight")) == ReadFile(Dump("restarted")));
}

TEST_F(CheckpointResume, SigtermLeavesASnapshotThatResumes) {
  auto p = Start(2, {"--checkpoint-uri", FileUri()}, {"--steps", "100000", "--slow-ms", "50"});
  ASSERT_TRUE(p->AwaitLine("] step 5", 60s).has_value()) << p->Output();
  p->Kill(SIGTERM);
  auto r = p->Wait(60s);
  ASSERT_FALSE(r.timed_out) << r.output;
  const auto finished = r.output.find("finished at step ");
  ASSERT_NE(finished, std::string::npos) << r.output;
  const int64_t stopped = std::stoll(r.output.substr(finished + 17));
  EXPECT_GE(stopped, 5);
  auto verify =
      Subprocess({BinPath("cohort"), "checkpoint", "verify", FileUri() + "/run1"}, {}).Wait(30s);
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  auto resumed = Run(2, {"--checkpoint-uri", FileUri(), "--resume", "latest"},
                     {"--steps", std::to_string(stopped + 2)});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find(fmt::format("resumed from step {}", stopped)), std::string::npos)
      << resumed.output;
}

// Snapshots at steps 2, 4 and 6; one byte flipped in step 6's shard of rank 0, then of rank 1.
TEST_F(CheckpointResume, CorruptNewestSnapshotFallsBackToThePreviousOne) {
  for (int rank : {0, 1}) {
    SCOPED_TRACE(fmt::format("corrupt shard of rank {}", rank));
    fs::remove_all(dir_ / "ckpt");
    auto first = Run(2, {"--checkpoint-uri", FileUri()}, {"--steps", "6"},
                     {{"COHORT_CHECKPOINT_EVERY", "2"}});
    ASSERT_EQ(first.exit_code, 0) << first.output;
    const fs::path shard =
        dir_ / "ckpt" / "run1" / "step-000000000006" / fmt::format("rank-{}.h5", rank);
    ASSERT_TRUE(fs::exists(shard));
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    const auto size = fs::file_size(shard);
    f.seekg(size / 2);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(size / 2);
    f.write(&c, 1);
    f.close();
    auto resumed = Run(2, {"--checkpoint-uri", FileUri(), "--resume", "latest"}, {"--steps", "8"},
                       {{"COHORT_LOG_LEVEL", "info"}});
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    // Both ranks fall back to the same snapshot, whichever rank's shard was damaged.
    EXPECT_NE(resumed.output.find("[rank 0] resumed from step 4"), std::string::npos)
        << resumed.output;
    EXPECT_NE(resumed.output.find("[rank 1] resumed from step 4"), std::string::npos)
        << resumed.output;
    EXPECT_NE(resumed.output.find("step-000000000006"), std::string::npos)
        << "the warning should name the snapshot it skipped\n"
        << resumed.output;
  }
}

}  // namespace
}  // namespace cohort::testing
