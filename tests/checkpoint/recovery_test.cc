// What happens when things go wrong: truncated and bit-flipped shards, snapshots without a
// manifest, retention, and the async saver's error reporting.
#include <gtest/gtest.h>

#include <chrono>

#include "checkpoint/async_saver.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/loader.h"
#include "checkpoint/store/faulty_store.h"
#include "checkpoint/store/memory_store.h"
#include "collectives/store/memory_store.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace cohort::checkpoint::testing {
namespace {

using namespace std::chrono_literals;
using Op = FaultyObjectStore::Op;
using Cut = FaultyObjectStore::Cut;

std::shared_ptr<ObjectStore> FreshMemory(const std::string& name) {
  ClearMemoryStore(name);
  return std::make_shared<MemoryObjectStore>(name);
}

CheckpointOptions Single(int keep = 0) {
  CheckpointOptions o;
  o.run = "run7";
  o.keep = keep;
  o.attempt = 0;
  return o;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

TEST(Recovery, TruncatedShardIsNamedAndLoadFallsBack) {
  auto memory = FreshMemory("rec-trunc");
  auto faulty = std::make_shared<FaultyObjectStore>(memory, /*seed=*/7);
  Checkpointer ckpt(faulty, Single());
  ckpt.Save(MakeShard(100, 0));
  // The store commits the next object short and reports success: silent damage.
  faulty->CutWrite(1, Cut::kCommitTruncated);
  ckpt.Save(MakeShard(200, 0));
  const RunDir run = RunDir::Of(*memory, "run7");
  EXPECT_EQ(ReadLatest(run), SnapshotName(200));

  const SnapshotCheck check = CheckSnapshot(run, SnapshotName(200), true);
  EXPECT_TRUE(check.complete);
  EXPECT_FALSE(check.ok);
  ASSERT_EQ(check.problems.size(), 1u);
  EXPECT_TRUE(Contains(check.problems[0], "rank-0.h5: ")) << check.problems[0];
  EXPECT_TRUE(Contains(check.problems[0], "(truncated)")) << check.problems[0];

  auto loaded = LoadLatest(run);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->manifest.step, 100);
  ExpectSameShard(MakeShard(100, 0), loaded->shards.at(0));
  ASSERT_EQ(loaded->warnings.size(), 1u);
  EXPECT_TRUE(Contains(loaded->warnings[0], "skipping snapshot step-000000000200"))
      << loaded->warnings[0];
  EXPECT_TRUE(Contains(loaded->warnings[0], "rank-0.h5")) << loaded->warnings[0];
  EXPECT_TRUE(Contains(loaded->warnings[0], "falling back to step-000000000100"));
  // Named explicitly, a bad snapshot is an error, not a fallback.
  EXPECT_THROW(LoadSnapshot(run, SnapshotName(200)), DataLoss);
}

TEST(Recovery, BitFlipIsNamedAndLoadFallsBack) {
  auto store = FreshMemory("rec-flip");
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  // Three ranks; one bit of rank 1's shard flips at rest.
  for (int64_t step : {100, 200}) {
    const auto errors = RunRanks(3, [&](int r) {
      CheckpointOptions o = Single();
      o.rank = r;
      o.world_size = 3;
      o.rendezvous = rdzv;
      Checkpointer ckpt(store, o);
      ckpt.Save(MakeShard(step, r));
    });
    for (const auto& e : errors) ASSERT_FALSE(e) << "a rank's save of step " << step << " failed";
  }
  const std::string key = "run7/" + SnapshotName(200) + "/rank-1.h5";
  std::string bytes = store->Get(key).value();
  bytes[bytes.size() / 2] ^= 0x10;
  store->Put(key, bytes);

  const RunDir run = RunDir::Of(*store, "run7");
  const SnapshotCheck check = CheckSnapshot(run, SnapshotName(200), true);
  ASSERT_EQ(check.problems.size(), 1u) << Joined(check.problems);
  EXPECT_TRUE(Contains(check.problems[0], "rank-1.h5: digest")) << check.problems[0];
  EXPECT_TRUE(Contains(check.problems[0], "(corrupt)")) << check.problems[0];
  EXPECT_TRUE(CheckSnapshot(run, SnapshotName(200), /*digests=*/false).ok);  // same size

  auto loaded = LoadLatest(run);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->manifest.step, 100);
  EXPECT_TRUE(Contains(Joined(loaded->warnings), "rank-1.h5: digest")) << Joined(loaded->warnings);
  // A rank that does not read the bad shard does not fall back.
  LoadOptions rank0;
  rank0.ranks = {0};
  EXPECT_EQ(LoadLatest(run, rank0)->manifest.step, 200);
}

TEST(Recovery, ASnapshotWithoutManifestDoesNotExist) {
  auto memory = FreshMemory("rec-nomanifest");
  auto faulty = std::make_shared<FaultyObjectStore>(memory);
  Checkpointer ckpt(faulty, Single());
  ckpt.Save(MakeShard(100, 0));
  faulty->FailNth(Op::kCommit, 2);  // step 200: the shard lands, the manifest does not
  EXPECT_THROW(ckpt.Save(MakeShard(200, 0)), Unavailable);
  const RunDir run = RunDir::Of(*memory, "run7");
  const auto entries = ListSnapshots(run);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_FALSE(entries[1].has_manifest);
  EXPECT_EQ(ReadLatest(run), SnapshotName(100));
  EXPECT_EQ(LoadLatest(run)->manifest.step, 100);
  // Even with `latest` gone, an incomplete folder is never chosen.
  memory->Delete("run7/latest");
  EXPECT_EQ(LoadLatest(run)->manifest.step, 100);
  EXPECT_THROW(LoadSnapshot(run, SnapshotName(200)), DataLoss);
  // Only incomplete folders: a fresh start.
  DeleteSnapshot(run, SnapshotName(100));
  EXPECT_FALSE(LoadLatest(run));
}

TEST(Recovery, EveryCompleteSnapshotBadIsAnErrorNotAFreshStart) {
  auto store = FreshMemory("rec-allbad");
  Checkpointer ckpt(store, Single());
  ckpt.Save(MakeShard(1, 0));
  store->Put("run7/" + SnapshotName(1) + "/rank-0.h5", std::string("garbage"));
  try {
    LoadLatest(RunDir::Of(*store, "run7"));
    FAIL() << "loaded a corrupt snapshot";
  } catch (const DataLoss& e) {
    EXPECT_TRUE(Contains(e.what(), "no snapshot in memory://rec-allbad/run7 loads")) << e.what();
    EXPECT_TRUE(Contains(e.what(), "rank-0.h5")) << e.what();
  }
}

TEST(Recovery, RetentionKeepsTheNewestCompleteOnes) {
  auto memory = FreshMemory("rec-retention");
  const RunDir run = RunDir::Of(*memory, "run7");
  // Left by an abandoned run that went further before resuming from an earlier snapshot.
  Checkpointer(memory, Single()).Save(MakeShard(900, 0));
  auto faulty = std::make_shared<FaultyObjectStore>(memory);
  Checkpointer ckpt(faulty, Single(/*keep=*/2));
  ckpt.Save(MakeShard(100, 0));
  faulty->FailNth(Op::kCommit, 2);  // 150 stays incomplete
  EXPECT_THROW(ckpt.Save(MakeShard(150, 0)), Unavailable);
  for (int64_t step : {200, 300, 400}) ckpt.Save(MakeShard(step, 0));
  std::vector<int64_t> steps;
  for (const auto& e : ListSnapshots(run)) {
    steps.push_back(e.step);
    EXPECT_TRUE(e.has_manifest) << e.name;
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{300, 400, 900}));
  EXPECT_EQ(ReadLatest(run), SnapshotName(400));
  EXPECT_EQ(LoadLatest(run)->manifest.step, 400);  // `latest`, not the abandoned 900
  EXPECT_EQ(ApplyRetention(run, SnapshotName(400), 1), std::vector<std::string>{SnapshotName(300)});
  EXPECT_TRUE(CheckSnapshot(run, SnapshotName(400), true).ok);  // never the newest
}

TEST(Recovery, AsyncSaveReturnsAtOnceAndAFailureIsThrownByTheNextSave) {
  auto memory = FreshMemory("rec-async");
  auto faulty = std::make_shared<FaultyObjectStore>(memory);
  faulty->Delay(Op::kCommit, 300ms);
  AsyncSaver saver(std::make_shared<Checkpointer>(faulty, Single()));
  auto start = std::chrono::steady_clock::now();
  saver.Save(100, MakeShard(999, 0));  // the step argument wins over shard.step
  EXPECT_LT(std::chrono::steady_clock::now() - start, 100ms);
  EXPECT_TRUE(saver.InFlight());
  saver.Wait();
  EXPECT_FALSE(saver.InFlight());
  EXPECT_EQ(saver.last_saved()->step, 100);
  faulty->Reset();

  faulty->FailNth(Op::kCommit, 1);
  saver.Save(200, MakeShard(200, 0));  // fails in the background
  try {
    saver.Save(300, MakeShard(300, 0));
    FAIL() << "the failed save of step 200 was not reported";
  } catch (const Unavailable& e) {
    EXPECT_TRUE(Contains(e.what(), "injected fault")) << e.what();
  }
  // That Save threw, so it saved nothing; the error is reported once.
  saver.Save(400, MakeShard(400, 0));
  saver.Finish();
  const RunDir run = RunDir::Of(*memory, "run7");
  std::vector<int64_t> steps;
  for (const auto& e : ListSnapshots(run)) steps.push_back(e.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{100, 400}));  // 200's shard never committed
  EXPECT_EQ(ReadLatest(run), SnapshotName(400));
  EXPECT_THROW(saver.Save(500, MakeShard(500, 0)), InvalidArgument);  // after Finish
}

TEST(Recovery, AsyncFailureIsThrownByFinish) {
  auto faulty = std::make_shared<FaultyObjectStore>(FreshMemory("rec-async-finish"));
  faulty->FailNth(Op::kNewWriter, 1, ErrorKind::kUnauthenticated);
  AsyncSaver saver(std::make_shared<Checkpointer>(faulty, Single()));
  saver.Save(1, MakeShard(1, 0));
  EXPECT_THROW(saver.Finish(), Unauthenticated);
  EXPECT_NO_THROW(saver.Finish());  // reported once
}

TEST(Recovery, SecondSaveWaitsForTheFirst) {
  auto faulty = std::make_shared<FaultyObjectStore>(FreshMemory("rec-async-wait"));
  faulty->Delay(Op::kCommit, 200ms);
  AsyncSaver saver(std::make_shared<Checkpointer>(faulty, Single()));
  saver.Save(1, MakeShard(1, 0));
  const auto start = std::chrono::steady_clock::now();
  saver.Save(2, MakeShard(2, 0));  // waits for save 1 (two commits of 200 ms)
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  saver.Finish();
  EXPECT_EQ(saver.last_saved()->step, 2);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
