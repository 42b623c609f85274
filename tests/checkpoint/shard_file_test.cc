// The shard file, digests and the manifest, in process: every dtype and odd shapes round-trip
// bit-exactly, attributes keep their types, bad input is refused with a message naming it.
#include "checkpoint/shard_file.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "checkpoint/digest.h"
#include "checkpoint/host_buffer_pool.h"
#include "checkpoint/manifest.h"
#include "common/utc_time.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace cohort::checkpoint::testing {
namespace {

Shard RoundTrip(const Shard& shard, int rank = 0, ShardHeader* header = nullptr) {
  auto bytes = std::make_shared<const std::string>(EncodeShard(shard, rank).ToString());
  return DecodeShard(bytes, "test shard", header);
}

class DTypeRoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(DTypeRoundTrip, EveryShapeBitExact) {
  const DType dtype = GetParam();
  const std::vector<std::vector<int64_t>> shapes = {
      {}, {0}, {1}, {2}, {97}, {1031}, {3, 0, 5}, {7, 13}, {2, 3, 5, 7}, {65537}};
  Shard shard;
  shard.step = 42;
  shard.epoch = 3;
  int seed = 0;
  for (const auto& shape : shapes) {
    shard.tensors.push_back(MakeTensor("t/" + std::to_string(seed), dtype, shape, seed));
    ++seed;
  }
  ShardHeader header;
  Shard got = RoundTrip(shard, 5, &header);
  ExpectSameShard(shard, got);
  EXPECT_EQ(header.rank, 5);
  EXPECT_EQ(header.format_version, kShardFormatVersion);
  // Loaded tensors are views into the file, aligned for their dtype and (at 64 bytes) for SIMD.
  for (const HostTensor& t : got.tensors) {
    if (t.nbytes() >= 64) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 16, 0u) << t.ToString();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, DTypeRoundTrip, ::testing::ValuesIn(collectives::kAllDTypes),
                         [](const auto& info) { return collectives::DTypeName(info.param); });

TEST(ShardFile, AttributesKeepTheirTypes) {
  Shard shard;
  shard.step = 7;
  shard.epoch = -1;
  shard.attributes["i"] = int64_t{-123456789012345};
  shard.attributes["d"] = 0.1;
  shard.attributes["s"] = std::string("héllo / world");
  shard.attributes["empty_text"] = std::string();
  shard.attributes["blob"] = Blob{{0, 1, 2, 255, 0}};
  shard.attributes["empty_blob"] = Blob{};
  // Over HDF5's 64 KiB attribute limit of the old format: dense attribute storage.
  std::vector<uint8_t> big(1 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131);
  shard.attributes["big_blob"] = Blob{big};
  Shard got = RoundTrip(shard);
  ExpectSameShard(shard, got);
  EXPECT_TRUE(got.tensors.empty());
}

TEST(ShardFile, SameStateSameBytes) {
  const Shard shard = MakeShard(100, 0);
  const std::string a = EncodeShard(shard, 0).ToString();
  // HDF5 stamps objects with the time in seconds unless told not to: cross a second boundary.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  const std::string b = EncodeShard(shard, 0).ToString();
  ASSERT_EQ(a.size(), b.size());
  size_t first_diff = 0;
  while (first_diff < a.size() && a[first_diff] == b[first_diff]) ++first_diff;
  EXPECT_EQ(first_diff, a.size()) << "the encodings differ from byte " << first_diff;
  EXPECT_EQ(a.substr(0, 8), std::string("\x89HDF\r\n\x1a\n", 8));  // an HDF5 file
}

TEST(ShardFile, FileIsMetadataPlusTensorBytes) {
  // 8 MiB of tensors: the file is barely larger, and no tensor byte went through HDF5.
  Shard shard;
  shard.tensors.push_back(MakeTensor("model/big", DType::kFloat32, {1 << 21}, 1));
  shard.tensors.push_back(MakeTensor("model/small", DType::kBFloat16, {3}, 2));
  EncodedShard encoded = EncodeShard(shard, 0);
  EXPECT_GE(encoded.size(), shard.TensorBytes());
  EXPECT_LT(encoded.size(), shard.TensorBytes() + 20000);  // metadata: a few KiB
  bool points_into_tensor = false;
  for (const auto& piece : encoded.pieces()) {
    if (piece.data == shard.tensors[0].data()) points_into_tensor = true;
  }
  EXPECT_TRUE(points_into_tensor) << "the big tensor should be streamed from its own buffer";
}

TEST(ShardFile, ManyTensorsInOneGroup) {
  // Thousands of links in one group use HDF5's dense link storage (heaps and B-trees), more
  // metadata than the usual few hundred bytes per tensor.
  Shard shard;
  for (int i = 0; i < 2000; ++i) {
    shard.tensors.push_back(
        MakeTensor("optimizer/state.with.a.rather.long.name." + std::to_string(i),
                   i % 2 ? DType::kFloat32 : DType::kBFloat16, {i % 5}, i));
  }
  ExpectSameShard(shard, RoundTrip(shard));
}

TEST(ShardFile, RefusesBadNamesWithAMessage) {
  auto expect_invalid = [](Shard shard, const std::string& needle) {
    try {
      EncodeShard(shard, 0);
      ADD_FAILURE() << "accepted; expected an error mentioning " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Shard dup;
  dup.tensors.push_back(MakeTensor("a/b", DType::kFloat32, {1}, 0));
  dup.tensors.push_back(MakeTensor("a/b", DType::kFloat32, {1}, 0));
  expect_invalid(dup, "two tensors are called 'a/b'");
  Shard conflict;
  conflict.tensors.push_back(MakeTensor("a", DType::kFloat32, {1}, 0));
  conflict.tensors.push_back(MakeTensor("a/b", DType::kFloat32, {1}, 0));
  expect_invalid(conflict, "tensor 'a' is also the group of tensor 'a/b'");
  Shard reserved;
  reserved.attributes["step"] = int64_t{1};
  expect_invalid(reserved, "'step' is reserved");
  Shard nul;
  nul.attributes["x"] = std::string("a\0b", 3);
  expect_invalid(nul, "Blob");
  EXPECT_THROW(HostTensor::Allocate("/abs", DType::kFloat32, {1}), InvalidArgument);
  EXPECT_THROW(HostTensor::Allocate("a//b", DType::kFloat32, {1}), InvalidArgument);
  EXPECT_THROW(HostTensor::Allocate("meta/x", DType::kFloat32, {1}), InvalidArgument);
  EXPECT_THROW(HostTensor::Allocate("a/../b", DType::kFloat32, {1}), InvalidArgument);
  EXPECT_THROW(HostTensor::Allocate("x", DType::kFloat32, {2, -1}), InvalidArgument);
}

TEST(ShardFile, GarbageIsDataLossNamingTheObject) {
  auto junk = std::make_shared<const std::string>(4096, 'x');
  try {
    DecodeShard(junk, "file:///ckpt/run/step-000000000001/rank-0.h5");
    FAIL() << "decoded garbage";
  } catch (const DataLoss& e) {
    EXPECT_NE(std::string(e.what()).find("rank-0.h5 is not a readable cohort shard"),
              std::string::npos)
        << e.what();
  }
  const std::string good = EncodeShard(MakeShard(1, 0), 0).ToString();
  auto truncated = std::make_shared<const std::string>(good.substr(0, good.size() / 2));
  EXPECT_THROW(DecodeShard(truncated, "half"), DataLoss);
}

TEST(HostBufferPool, ReusesBuffersOnceTheirTensorsAreGone) {
  HostBufferPool pool;
  const void* first = nullptr;
  {
    HostTensor a = pool.Allocate("model/a", DType::kFloat32, {1031});
    ASSERT_NE(a.mutable_data(), nullptr);
    first = a.data();
    HostTensor copy = a;  // a second reference: the buffer stays out
    a = HostTensor();
    EXPECT_EQ(pool.IdleBytes(), 0u);
  }
  EXPECT_GT(pool.IdleBytes(), 4124u);
  HostTensor b = pool.Allocate("model/b", DType::kInt32, {1031});  // same byte size
  EXPECT_EQ(b.data(), first);
  HostTensor c = pool.Allocate("model/c", DType::kFloat32, {7});
  EXPECT_NE(c.data(), first);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c.data()) % 64, 0u);
  auto outlives = std::make_unique<HostTensor>(pool.Allocate("x", DType::kUInt8, {0}));
  pool.Trim();
  EXPECT_EQ(pool.IdleBytes(), 0u);
}

TEST(Digest, KnownValues) {
  // FIPS 180-2 test vector, and xxhsum -H2 of the empty input.
  EXPECT_EQ(Digest(DigestAlgorithm::kSha256, "abc", 3),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Digest(DigestAlgorithm::kXxh3_128, "", 0), "xxh3-128:99aa06d3014798d86001c324468d497f");
  auto h = NewHasher(DigestAlgorithm::kXxh3_128);
  h->Update("ab", 2);
  h->Update("c", 1);
  EXPECT_EQ(h->Finish(), Digest(DigestAlgorithm::kXxh3_128, "abc", 3));
  EXPECT_EQ(DigestAlgorithmOf("sha256:" + std::string(64, 'a')), DigestAlgorithm::kSha256);
  EXPECT_THROW(DigestAlgorithmOf("md5:abc"), DataLoss);
  EXPECT_THROW(ParseDigestAlgorithm("md5"), InvalidArgument);
}

TEST(Manifest, RoundTripAndNames) {
  Manifest m;
  m.run = "run7";
  m.step = 1200;
  m.epoch = 3;
  m.world_size = 3;
  m.created = UtcNowRfc3339();
  for (int r = 0; r < 3; ++r) {
    m.shards.push_back(
        {r, ShardObjectName(r), 100u + r, Digest(DigestAlgorithm::kXxh3_128, "x", 1), 4});
  }
  const Manifest back = Manifest::Parse(m.ToJson(), "m");
  EXPECT_EQ(back.ToJson(), m.ToJson());
  EXPECT_EQ(back.TotalBytes(), 303u);
  EXPECT_EQ(back.layout["kind"], "data_parallel");
  EXPECT_EQ(SnapshotName(1200), "step-000000001200");
  EXPECT_EQ(ParseSnapshotName("step-000000001200"), 1200);
  EXPECT_FALSE(ParseSnapshotName("step-12a"));
  EXPECT_FALSE(ParseSnapshotName("latest"));
  EXPECT_LT(SnapshotName(99), SnapshotName(100));  // keys sort by step
}

TEST(Manifest, RejectsWhatWouldMislead) {
  EXPECT_THROW(Manifest::Parse("{", "m"), DataLoss);
  EXPECT_THROW(Manifest::Parse(R"({"format":"other"})", "m"), DataLoss);
  Manifest m;
  m.shards.push_back({0, "../../etc/passwd", 1, Digest(DigestAlgorithm::kSha256, "", 0), 0});
  try {
    Manifest::Parse(m.ToJson(), "file:///x/manifest.json");
    FAIL() << "accepted a path outside the snapshot";
  } catch (const DataLoss& e) {
    EXPECT_NE(std::string(e.what()).find("file:///x/manifest.json"), std::string::npos);
  }
  m.shards[0].object = "rank-0.h5";
  m.format_version = kManifestFormatVersion + 1;
  EXPECT_THROW(Manifest::Parse(m.ToJson(), "m"), DataLoss);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
