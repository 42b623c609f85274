// Crash safety: a process saving snapshots in a loop to file:// is SIGKILLed at seeded random
// moments; after every kill `latest` names a snapshot that verifies and holds exactly the state
// of its step, and the next run resumes from it.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <random>
#include <thread>

#include "checkpoint/catalog.h"
#include "checkpoint/loader.h"
#include "tests/checkpoint/checkpoint_test_util.h"
#include "tests/checkpoint/crash_shard.h"
#include "tests/util/subprocess.h"

namespace cohort::checkpoint::testing {
namespace {

using namespace std::chrono_literals;

TEST(CrashSafety, SigkillAtRandomMomentsLeavesLatestGood) {
  constexpr int kTrials = 24;
  constexpr size_t kKib = 4096;  // per rank, 2 ranks: 8 MiB per snapshot
  TempDir dir;
  auto store = std::shared_ptr<ObjectStore>(OpenObjectStore("file://" + dir.path()));
  const RunDir run = RunDir::Of(*store, "crash");
  std::mt19937 rng(20240501);
  int64_t last_latest = 0;
  int mid_save_kills = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    cohort::testing::Subprocess saver(
        {cohort::testing::BinPath("checkpoint_crash_saver"), dir.path(), std::to_string(kKib)},
        {{"COHORT_LOG_LEVEL", "warn"}});
    ASSERT_TRUE(saver.AwaitLine("resumed", 30s)) << saver.Output();
    const auto delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 400)(rng));
    std::this_thread::sleep_for(delay);
    saver.Kill(SIGKILL);
    const auto result = saver.Wait(10s);
    ASSERT_EQ(result.signal, SIGKILL) << result.output;  // it neither failed nor finished
    ASSERT_EQ(result.output.find("MISMATCH"), std::string::npos) << result.output;

    const auto latest = ReadLatest(run);
    ASSERT_TRUE(latest || last_latest == 0) << "latest vanished after trial " << trial;
    if (!latest) continue;
    const SnapshotCheck check = CheckSnapshot(run, *latest, /*digests=*/true);
    ASSERT_TRUE(check.ok) << "trial " << trial << ": " << *latest << ": " << check.problems.at(0);
    const LoadedSnapshot loaded = LoadSnapshot(run, *latest);
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(CompareCrashShard(loaded.shards.at(r), loaded.manifest.step, r, kKib), "")
          << "trial " << trial << " rank " << r;
    }
    EXPECT_GE(loaded.manifest.step, last_latest);
    // Killed with a snapshot folder newer than latest: the kill landed inside a save.
    const auto entries = ListSnapshots(run);
    if (!entries.empty() && entries.back().step > loaded.manifest.step) ++mid_save_kills;
    std::printf("trial %2d: killed after %3d ms, latest %s, %zu folders\n", trial,
                static_cast<int>(delay.count()), latest->c_str(), entries.size());
    last_latest = loaded.manifest.step;
  }
  EXPECT_GT(last_latest, 0) << "no snapshot was ever completed";
  EXPECT_GT(mid_save_kills, 0) << "no kill landed inside a save; the test proves little";
  std::printf("%d of %d kills landed inside a save; last latest step %lld\n", mid_save_kills,
              kTrials, static_cast<long long>(last_latest));
}

}  // namespace
}  // namespace cohort::checkpoint::testing
