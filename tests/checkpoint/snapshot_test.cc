// Saving and loading snapshots in process: ranks as threads over an in-memory rendezvous store
// (and the real gRPC store), snapshots in memory:// with faults injected by FaultyObjectStore.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "checkpoint/async_saver.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/loader.h"
#include "checkpoint/store/faulty_store.h"
#include "checkpoint/store/memory_store.h"
#include "collectives/store/grpc_store_client.h"
#include "collectives/store/memory_store.h"
#include "collectives/store/store_from_env.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace cohort::checkpoint::testing {
namespace {

using namespace std::chrono_literals;
using Op = FaultyObjectStore::Op;

std::shared_ptr<ObjectStore> FreshMemory(const std::string& name) {
  ClearMemoryStore(name);
  return std::make_shared<MemoryObjectStore>(name);
}

// Records the order in which objects become visible (committed).
class RecordingStore : public ObjectStore {
 public:
  explicit RecordingStore(std::shared_ptr<ObjectStore> inner) : inner_(std::move(inner)) {}
  std::string Uri() const override { return inner_->Uri(); }
  std::unique_ptr<ObjectWriter> NewWriter(const std::string& key) override {
    struct Writer : ObjectWriter {
      std::unique_ptr<ObjectWriter> inner;
      RecordingStore* store;
      std::string key;
      void Write(const void* d, size_t n) override { inner->Write(d, n); }
      void Commit() override {
        inner->Commit();
        std::lock_guard<std::mutex> lock(store->mu_);
        store->commits_.push_back(key);
      }
    };
    auto w = std::make_unique<Writer>();
    w->inner = inner_->NewWriter(key);
    w->store = this;
    w->key = key;
    return w;
  }
  std::optional<std::string> Get(const std::string& k) override { return inner_->Get(k); }
  std::string GetRange(const std::string& k, uint64_t o, uint64_t n) override {
    return inner_->GetRange(k, o, n);
  }
  std::optional<ObjectInfo> Head(const std::string& k) override { return inner_->Head(k); }
  std::vector<ObjectInfo> List(const std::string& p) override { return inner_->List(p); }
  void Delete(const std::string& k) override { inner_->Delete(k); }
  std::vector<std::string> commits() {
    std::lock_guard<std::mutex> lock(mu_);
    return commits_;
  }

 private:
  std::shared_ptr<ObjectStore> inner_;
  std::mutex mu_;
  std::vector<std::string> commits_;
};

std::string What(const std::exception_ptr& e) {
  if (!e) return "";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  }
}

CheckpointOptions Options(int rank, int world, std::shared_ptr<collectives::Store> rdzv,
                          int keep = 0) {
  CheckpointOptions o;
  o.run = "run7";
  o.rank = rank;
  o.world_size = world;
  o.rendezvous = std::move(rdzv);
  o.keep = keep;
  o.attempt = 0;
  o.timeout = 20s;
  return o;
}

TEST(Snapshot, SingleRankRoundTrip) {
  auto store = FreshMemory("snap-single");
  Checkpointer ckpt(store, Options(0, 1, nullptr));
  const Shard shard = MakeShard(100, 0);
  SavedSnapshot saved = ckpt.Save(shard);
  EXPECT_EQ(saved.name, "step-000000000100");
  EXPECT_EQ(saved.uri, "memory://snap-single/run7/step-000000000100");
  std::vector<std::string> keys;
  for (const auto& o : store->List("")) keys.push_back(o.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"run7/latest", "run7/step-000000000100/manifest.json",
                                            "run7/step-000000000100/rank-0.h5"}));
  EXPECT_EQ(store->Get("run7/latest").value(), "step-000000000100\n");

  auto loaded = LoadLatest(ckpt.run_dir());
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->manifest.step, 100);
  EXPECT_EQ(loaded->manifest.epoch, 10);
  EXPECT_EQ(loaded->manifest.run, "run7");
  EXPECT_EQ(loaded->manifest.shards.at(0).size, saved.shard.size);
  EXPECT_EQ(loaded->manifest.shards.at(0).digest.rfind("xxh3-128:", 0), 0u);
  EXPECT_TRUE(loaded->warnings.empty());
  ExpectSameShard(shard, loaded->shards.at(0));
  EXPECT_FALSE(LoadLatest(RunDir::Of(*store, "other-run")));  // a fresh start
}

TEST(Snapshot, LoadByUriOnFiles) {
  TempDir dir;
  auto store = std::shared_ptr<ObjectStore>(OpenObjectStore("file://" + dir.path()));
  Checkpointer ckpt(store, Options(0, 1, nullptr));
  for (int64_t step : {1, 2}) ckpt.Save(MakeShard(step, 0));
  // A snapshot URI loads exactly that snapshot; a run's URI its latest.
  auto first = LoadUri("file://" + dir.path() + "/run7/step-000000000001");
  ASSERT_TRUE(first);
  ExpectSameShard(MakeShard(1, 0), first->shards.at(0));
  auto latest = LoadUri("file://" + dir.path() + "/run7");
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->name, SnapshotName(2));
  EXPECT_EQ(latest->uri, "file://" + dir.path() + "/run7/step-000000000002");
}

TEST(Snapshot, LoadByUriOnMemory) {
  auto store = FreshMemory("snap-by-uri");
  Checkpointer ckpt(store, Options(0, 1, nullptr));
  SavedSnapshot first = ckpt.Save(MakeShard(1, 0));
  ckpt.Save(MakeShard(2, 0));
  // The URI a save reports is one LoadUri takes back, as with file://.
  EXPECT_EQ(first.uri, "memory://snap-by-uri/run7/step-000000000001");
  auto loaded = LoadUri(first.uri);
  ASSERT_TRUE(loaded);
  ExpectSameShard(MakeShard(1, 0), loaded->shards.at(0));
  auto latest = LoadUri("memory://snap-by-uri/run7");
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->name, SnapshotName(2));
  EXPECT_EQ(latest->uri, "memory://snap-by-uri/run7/step-000000000002");
}

TEST(Snapshot, Sha256Option) {
  auto store = FreshMemory("snap-sha");
  CheckpointOptions o = Options(0, 1, nullptr);
  o.digest = DigestAlgorithm::kSha256;
  Checkpointer(store, o).Save(MakeShard(5, 0));
  auto check = CheckSnapshot(RunDir::Of(*store, "run7"), SnapshotName(5), true);
  EXPECT_TRUE(check.ok) << check.problems.at(0);
  EXPECT_EQ(check.manifest->shards[0].digest.rfind("sha256:", 0), 0u);
}

class MultiRank : public ::testing::TestWithParam<int> {};

TEST_P(MultiRank, EveryRankSavesItsShardAndRankZeroWritesTheManifestLast) {
  const int world = GetParam();
  auto recording = std::make_shared<RecordingStore>(FreshMemory("snap-multi"));
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  const auto errors = RunRanks(world, [&](int rank) {
    Checkpointer ckpt(recording, Options(rank, world, rdzv, /*keep=*/2));
    for (int64_t step : {10, 20, 30}) ckpt.Save(MakeShard(step, rank));
  });
  for (int r = 0; r < world; ++r)
    EXPECT_FALSE(errors[r]) << "rank " << r << ": " << What(errors[r]);

  // In each snapshot, the manifest became visible after every shard, and `latest` after it.
  const auto commits = recording->commits();
  for (int64_t step : {10, 20, 30}) {
    const std::string dir = "run7/" + SnapshotName(step) + "/";
    auto pos = [&](const std::string& key) {
      return std::find(commits.begin(), commits.end(), key) - commits.begin();
    };
    const auto manifest_at = pos(dir + "manifest.json");
    ASSERT_LT(manifest_at, static_cast<long>(commits.size()));
    for (int r = 0; r < world; ++r) EXPECT_LT(pos(dir + ShardObjectName(r)), manifest_at);
  }
  EXPECT_EQ(commits.back(), "run7/latest");

  const RunDir run = RunDir::Of(*recording, "run7");
  const auto entries = ListSnapshots(run);  // retention kept the newest 2
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].step, 20);
  auto loaded = LoadLatest(run);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->manifest.world_size, world);
  ASSERT_EQ(loaded->shards.size(), static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) ExpectSameShard(MakeShard(30, r), loaded->shards.at(r));
  // A resume on another world size reads rank 0 and its own rank only.
  LoadOptions some;
  some.ranks = {0};
  EXPECT_EQ(LoadLatest(run, some)->shards.size(), 1u);
  some.ranks = {world};
  EXPECT_THROW(LoadLatest(run, some), InvalidArgument);
  // Every rendezvous key but the last save's "done" was cleaned up.
  EXPECT_LE(rdzv->List("checkpoint/").size(), world > 1 ? 2u : 0u);
}

INSTANTIATE_TEST_SUITE_P(Worlds, MultiRank, ::testing::Values(1, 3));

TEST(Snapshot, GrpcRendezvousStore) {
  int port = 0;
  auto server = collectives::HostStore("127.0.0.1", 0, "", 10s, &port);
  auto store = FreshMemory("snap-grpc");
  const auto errors = RunRanks(3, [&](int rank) {
    // Each rank its own client, as separate processes would have.
    auto rdzv =
        std::make_shared<collectives::GrpcStoreClient>(fmt::format("127.0.0.1:{}", port), "", 10s);
    Checkpointer(store, Options(rank, 3, rdzv)).Save(MakeShard(7, rank));
  });
  for (int r = 0; r < 3; ++r) EXPECT_FALSE(errors[r]) << What(errors[r]);
  auto loaded = LoadLatest(RunDir::Of(*store, "run7"));
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->shards.size(), 3u);
}

TEST(Snapshot, AFailedRankLeavesNoManifestAndEveryRankHearsOfIt) {
  auto memory = FreshMemory("snap-rankfail");
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  RunRanks(
      3, [&](int rank) { Checkpointer(memory, Options(rank, 3, rdzv)).Save(MakeShard(1, rank)); });
  auto faulty = std::make_shared<FaultyObjectStore>(memory);
  faulty->FailNth(Op::kCommit, 1);
  auto rdzv2 = std::make_shared<collectives::MemoryStore>();
  const auto errors = RunRanks(3, [&](int rank) {
    auto store = rank == 2 ? std::static_pointer_cast<ObjectStore>(faulty) : memory;
    Checkpointer(store, Options(rank, 3, rdzv2)).Save(MakeShard(2, rank));
  });
  EXPECT_NE(What(errors[2]).find("injected fault"), std::string::npos) << What(errors[2]);
  EXPECT_NE(What(errors[0]).find("rank 2: "), std::string::npos) << What(errors[0]);
  EXPECT_NE(What(errors[1]).find("rank 0 did not complete"), std::string::npos) << What(errors[1]);
  const RunDir run = RunDir::Of(*memory, "run7");
  EXPECT_FALSE(memory->Head("run7/" + SnapshotName(2) + "/manifest.json"));
  EXPECT_EQ(ReadLatest(run), SnapshotName(1));
  EXPECT_EQ(LoadLatest(run)->manifest.step, 1);
}

TEST(Snapshot, ARankThatNeverReportsIsNamedAfterTheTimeout) {
  auto store = FreshMemory("snap-timeout");
  CheckpointOptions o = Options(0, 2, std::make_shared<collectives::MemoryStore>());
  o.timeout = 300ms;
  try {
    Checkpointer(store, o).Save(MakeShard(3, 0));
    FAIL() << "saved without rank 1";
  } catch (const Timeout& e) {
    EXPECT_NE(std::string(e.what()).find("rank(s) 1 did not report"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(store->Head("run7/" + SnapshotName(3) + "/manifest.json"));
}

// A rank whose training failed cancels its saves: a wait for a peer that died (up to the
// 30-minute default) ends within the 0.2 s slice, on rank 0 (waiting for shards) and on the
// others (waiting for rank 0's manifest), and later saves refuse at once.
TEST(Snapshot, CancelEndsAWaitForADeadPeerAtOnce) {
  auto store = FreshMemory("snap-cancel");
  for (int rank : {0, 1}) {
    SCOPED_TRACE(fmt::format("rank {} of 2 waits for the other", rank));
    Checkpointer c(store, Options(rank, 2, std::make_shared<collectives::MemoryStore>()));
    std::thread canceller([&] {
      std::this_thread::sleep_for(300ms);
      c.Cancel();
    });
    const auto start = std::chrono::steady_clock::now();
    try {
      c.Save(MakeShard(4, rank));
      ADD_FAILURE() << "saved without the other rank";
    } catch (const PeerFailure& e) {
      EXPECT_NE(std::string(e.what()).find("snapshot step 4 abandoned"), std::string::npos)
          << e.what();
    }
    const auto waited = std::chrono::steady_clock::now() - start;
    canceller.join();
    EXPECT_GE(waited, 300ms);
    EXPECT_LT(waited, 1500ms);
    EXPECT_THROW(c.Save(MakeShard(5, rank)), PeerFailure);
  }
  EXPECT_FALSE(store->Head("run7/" + SnapshotName(4) + "/manifest.json"));
}

// Holds every commit until Open() (a slow upload).
class GatedStore : public RecordingStore {
 public:
  using RecordingStore::RecordingStore;
  std::unique_ptr<ObjectWriter> NewWriter(const std::string& key) override {
    struct Writer : ObjectWriter {
      std::unique_ptr<ObjectWriter> inner;
      std::shared_future<void> gate;
      void Write(const void* d, size_t n) override { inner->Write(d, n); }
      void Commit() override {
        gate.wait();
        inner->Commit();
      }
    };
    auto w = std::make_unique<Writer>();
    w->inner = RecordingStore::NewWriter(key);
    w->gate = gate_;
    return w;
  }
  void Open() { open_.set_value(); }

 private:
  std::promise<void> open_;
  std::shared_future<void> gate_ = open_.get_future().share();
};

// Cancelled while its own shard uploads, rank 0 still completes a snapshot whose other shards
// have all been reported: Cancel stops the waiting, not what is already there.
TEST(Snapshot, CancelStillCompletesASnapshotWhoseShardsAreAllIn) {
  auto memory = FreshMemory("snap-cancel-late");
  auto gated = std::make_shared<GatedStore>(memory);
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  std::exception_ptr error1;
  std::thread rank1([&] {
    try {
      Checkpointer(memory, Options(1, 2, rdzv)).Save(MakeShard(8, 1));
    } catch (...) {
      error1 = std::current_exception();
    }
  });
  while (rdzv->List("checkpoint/").empty()) std::this_thread::sleep_for(5ms);  // rank 1 is in
  Checkpointer c(gated, Options(0, 2, rdzv));
  std::exception_ptr error0;
  std::thread rank0([&] {
    try {
      c.Save(MakeShard(8, 0));
    } catch (...) {
      error0 = std::current_exception();
    }
  });
  std::this_thread::sleep_for(100ms);  // rank 0 is uploading (held by the gate)
  c.Cancel();
  gated->Open();
  rank0.join();
  rank1.join();
  EXPECT_FALSE(error0) << What(error0);
  EXPECT_FALSE(error1) << What(error1);
  EXPECT_TRUE(memory->Head("run7/" + SnapshotName(8) + "/manifest.json"));
}

// An AsyncSaver destroyed by an exception (the training loop threw: a peer died) gives up the
// save in flight instead of waiting for the dead peer's shard; destroyed normally, it waits.
TEST(Snapshot, AsyncSaverDestroyedByAnExceptionAbandonsTheSaveInFlight) {
  auto store = FreshMemory("snap-abandon");
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  const auto start = std::chrono::steady_clock::now();
  try {
    AsyncSaver saver(std::make_shared<Checkpointer>(store, Options(0, 2, rdzv)));
    saver.Save(6, MakeShard(6, 0));
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE(saver.InFlight());  // waiting for rank 1's shard
    throw PeerFailure("rank 1 died");
  } catch (const PeerFailure& e) {
    EXPECT_STREQ(e.what(), "rank 1 died");
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  EXPECT_FALSE(store->Head("run7/" + SnapshotName(6) + "/manifest.json"));
  // Without an exception the destructor waits: rank 1 reports, and the snapshot completes.
  auto rdzv2 = std::make_shared<collectives::MemoryStore>();
  std::thread rank1([&] { Checkpointer(store, Options(1, 2, rdzv2)).Save(MakeShard(7, 1)); });
  {
    AsyncSaver saver(std::make_shared<Checkpointer>(store, Options(0, 2, rdzv2)));
    saver.Save(7, MakeShard(7, 0));
  }
  rank1.join();
  EXPECT_TRUE(store->Head("run7/" + SnapshotName(7) + "/manifest.json"));
}

TEST(Snapshot, RefusesBadOptions) {
  auto store = FreshMemory("snap-opts");
  EXPECT_THROW(Checkpointer(store, Options(3, 3, nullptr)), InvalidArgument);
  EXPECT_THROW(Checkpointer(store, Options(0, 2, nullptr)), InvalidArgument);
  EXPECT_THROW(Checkpointer(nullptr, Options(0, 1, nullptr)), InvalidArgument);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
