// Snapshots on s3:// (moto on 127.0.0.1 with signature checks, tests/checkpoint/moto_fixture.h):
// a 3-rank save lands as the objects awscli lists and downloads byte for byte, loads back,
// verifies with `cohort checkpoint verify`, and a shard corrupted behind our back is named.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "checkpoint/checkpointer.h"
#include "checkpoint/digest.h"
#include "checkpoint/loader.h"
#include "collectives/store/memory_store.h"
#include "tests/checkpoint/checkpoint_test_util.h"
#include "tests/checkpoint/moto_fixture.h"
#include "tests/util/subprocess.h"

namespace cohort::checkpoint::testing {
namespace {

using namespace std::chrono_literals;

// Rank 0's model is over the 8 MiB multipart threshold.
Shard BigShard(int64_t step, int rank) {
  Shard s = MakeShard(step, rank);
  if (rank == 0) s.tensors.push_back(MakeTensor("model/embed", DType::kBFloat16, {5 << 20}, 9));
  return s;
}

TEST(S3Snapshot, SaveLoadVerifyAndAwscliSeesEveryObject) {
  COHORT_REQUIRE_MOTO(moto);
  moto->ExportEnv();
  const std::string uri = moto->FreshUri("snapshots");
  const std::string prefix = uri.substr(("s3://" + moto->bucket() + "/").size());
  auto store = std::shared_ptr<ObjectStore>(OpenObjectStore(uri));
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  const auto errors = RunRanks(3, [&](int r) {
    CheckpointOptions o;
    o.run = "run7";
    o.rank = r;
    o.world_size = 3;
    o.rendezvous = rdzv;
    o.attempt = 0;
    Checkpointer ckpt(store, o);
    for (int64_t step : {1, 2}) ckpt.Save(BigShard(step, r));
  });
  for (const auto& e : errors) ASSERT_FALSE(e) << "a rank's save failed";

  const RunDir run = RunDir::Of(*store, "run7");
  auto loaded = LoadLatest(run);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->manifest.step, 2);
  for (int r = 0; r < 3; ++r) ExpectSameShard(BigShard(2, r), loaded->shards.at(r));

  // What awscli sees: every object, with the sizes and digests the manifest records.
  std::map<std::string, uint64_t> listed;
  for (const auto& o : moto->AwsList(prefix + "/"))
    listed[o.key.substr(prefix.size() + 1)] = o.size;
  EXPECT_EQ(listed.size(), 9u);  // latest + 2 x (manifest + 3 shards)
  EXPECT_EQ(moto->AwsGet(prefix + "/run7/latest").value_or(""), "step-000000000002\n");
  const auto manifest_text = moto->AwsGet(prefix + "/run7/step-000000000002/manifest.json");
  ASSERT_TRUE(manifest_text);
  const Manifest m = Manifest::Parse(*manifest_text, "awscli's copy");
  ASSERT_EQ(m.shards.size(), 3u);
  for (const ShardEntry& e : m.shards) {
    const std::string key = "run7/step-000000000002/" + e.object;
    EXPECT_EQ(listed[key], e.size) << key;
    const auto bytes = moto->AwsGet(prefix + "/" + key);
    ASSERT_TRUE(bytes) << key;
    EXPECT_EQ(Digest(DigestAlgorithmOf(e.digest), bytes->data(), bytes->size()), e.digest) << key;
  }
  EXPECT_EQ(moto->PendingMultipartUploads(prefix), 0);

  // The real command over s3://, then a shard replaced behind our back.
  auto verify = [&](const std::string& target) {
    cohort::testing::Subprocess p(
        {cohort::testing::BinPath("cohort"), "checkpoint", "verify", target}, moto->Env());
    return p.Wait(120s);
  };
  auto r = verify(uri);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 good, 0 bad"), std::string::npos) << r.output;

  std::string bad = store->Get("run7/step-000000000002/rank-1.h5").value();
  bad[bad.size() / 3] ^= 0x01;
  TempDir dir;
  const std::string local = dir.path() + "/rank-1.h5";
  std::ofstream(local, std::ios::binary) << bad;
  const auto cp = moto->Aws(
      {"s3", "cp", "--only-show-errors", local,
       fmt::format("s3://{}/{}/run7/step-000000000002/rank-1.h5", moto->bucket(), prefix)});
  ASSERT_EQ(cp.exit_code, 0) << cp.output;
  r = verify(uri + "/run7/step-000000000002");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("rank-1.h5: digest"), std::string::npos) << r.output;
  loaded = LoadLatest(run);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->manifest.step, 1);
  ASSERT_FALSE(loaded->warnings.empty());
  EXPECT_NE(loaded->warnings.back().find("rank-1.h5"), std::string::npos);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
