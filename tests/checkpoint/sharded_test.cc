// Sharded snapshots without torch: copying boxes between row-major arrays (odd shapes, every
// dtype), saving a dp x tp job's slices as threads, reading them back at other layouts bit-exact
// with ranged reads, the one-line refusal of a layout that cannot map, damage detection, and
// consolidation into a data-parallel snapshot.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>

#include "checkpoint/box.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/consolidate.h"
#include "checkpoint/layout.h"
#include "checkpoint/loader.h"
#include "checkpoint/reshard.h"
#include "checkpoint/store/memory_store.h"
#include "collectives/store/memory_store.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace cohort::checkpoint::testing {
namespace {

// Boxes that cut shape into pieces along every dimension at the given cut points.
std::vector<Box> Grid(const Shape& shape, const std::vector<std::vector<int64_t>>& cuts) {
  std::vector<Box> boxes{Box{{}, {}}};
  for (size_t d = 0; d < shape.size(); ++d) {
    std::vector<int64_t> points = {0};
    for (int64_t c : cuts[d]) points.push_back(c);
    points.push_back(shape[d]);
    std::vector<Box> next;
    for (const Box& b : boxes) {
      for (size_t i = 0; i + 1 < points.size(); ++i) {
        Box n = b;
        n.offsets.push_back(points[i]);
        n.sizes.push_back(points[i + 1] - points[i]);
        next.push_back(n);
      }
    }
    boxes = next;
  }
  return boxes;
}

// The box `box` of a whole tensor, as its own tensor.
HostTensor SliceOf(const HostTensor& whole, const Box& box) {
  HostTensor out = HostTensor::Allocate(whole.name(), whole.dtype(), box.sizes);
  CopyRegion(whole.data(), Box::Whole(whole.shape()), 0, out.mutable_data(), box, box,
             collectives::ElementSize(whole.dtype()));
  return out;
}

struct CopyCase {
  Shape shape;
  std::vector<std::vector<int64_t>> from, to;  // two different cuttings
};

TEST(Box, CuttingAndReassemblingIsBitExactForOddShapesAndEveryDType) {
  const std::vector<CopyCase> cases = {
      {{}, {}, {}},                                   // 0-d
      {{1}, {{}}, {{}}},                              // one element
      {{13}, {{5}}, {{1, 7, 12}}},                    // prime, 1-d
      {{7, 13}, {{3}, {}}, {{}, {2, 11}}},            // rows vs columns
      {{3, 5, 2}, {{1}, {}, {1}}, {{2}, {4}, {}}},    // 3-d, both cuts partial
      {{1, 11, 1}, {{}, {3}, {}}, {{}, {5, 6}, {}}},  // sizes 1
      {{4, 0}, {{2}, {}}, {{}, {}}},                  // empty
  };
  for (DType dtype : collectives::kAllDTypes) {
    for (const CopyCase& c : cases) {
      const HostTensor whole = MakeTensor("model/x", dtype, c.shape, 3);
      std::vector<HostTensor> pieces;
      const auto from = Grid(c.shape, c.from);
      for (const Box& b : from) pieces.push_back(SliceOf(whole, b));
      // Reassemble each box of the second cutting from the overlapping pieces of the first.
      HostTensor rebuilt = HostTensor::Allocate("model/x", dtype, c.shape);
      if (rebuilt.nbytes() > 0) std::memset(rebuilt.mutable_data(), 0xAB, rebuilt.nbytes());
      for (const Box& target : Grid(c.shape, c.to)) {
        HostTensor part = HostTensor::Allocate("model/x", dtype, target.sizes);
        for (size_t i = 0; i < from.size(); ++i) {
          if (auto region = Intersect(from[i], target)) {
            CopyRegion(pieces[i].data(), from[i], 0, part.mutable_data(), target, *region,
                       collectives::ElementSize(dtype));
          }
        }
        CopyRegion(part.data(), target, 0, rebuilt.mutable_data(), Box::Whole(c.shape), target,
                   collectives::ElementSize(dtype));
      }
      ExpectSameTensor(whole, rebuilt);
    }
  }
}

TEST(Box, RangedSourceAndBadRegions) {
  const HostTensor whole = MakeTensor("model/x", DType::kFloat64, {6, 5}, 1);
  const Box all = Box::Whole({6, 5});
  const Box region{{2, 1}, {3, 3}};
  const auto [first, end] = ByteSpan(all, region, 8);
  EXPECT_EQ(first, (2 * 5 + 1) * 8u);
  EXPECT_EQ(end, (4 * 5 + 3 + 1) * 8u);
  // Copy out of only the fetched span.
  std::string fetched(static_cast<const char*>(whole.data()) + first, end - first);
  HostTensor got = HostTensor::Allocate("model/x", DType::kFloat64, region.sizes);
  CopyRegion(fetched.data(), all, first, got.mutable_data(), region, region, 8);
  ExpectSameTensor(SliceOf(whole, region), got);
  EXPECT_THROW(CopyRegion(fetched.data(), all, first + 8, got.mutable_data(), region, region, 8),
               InvalidArgument);
  EXPECT_THROW(CopyRegion(whole.data(), all, 0, got.mutable_data(), region, Box{{0, 0}, {6, 5}}, 8),
               InvalidArgument);
  EXPECT_FALSE(Intersect(Box{{0}, {3}}, Box{{3}, {2}}));
  EXPECT_EQ(Intersect(Box{{0, 2}, {3, 4}}, Box{{1, 0}, {5, 3}})->ToString(), "[1:3, 2:3]");
}

// ---- sharded snapshots ----

constexpr int kTp = 2, kDp = 2;

// The global state of a small model: a row-cut matrix, a column-cut 3-d tensor, a replicated
// bias and a replicated scalar.
std::vector<HostTensor> GlobalTensors() {
  return {MakeTensor("model/fc.weight", DType::kFloat32, {7, 13}, 1),
          MakeTensor("model/fc.bias", DType::kBFloat16, {5}, 2),
          MakeTensor("model/conv", DType::kUInt8, {3, 5, 2}, 3),
          MakeTensor("optimizer/fc.weight/exp_avg", DType::kFloat64, {7, 13}, 4),
          MakeTensor("optimizer/fc.weight/step", DType::kInt64, {}, 5)};
}

// Tensor-parallel rank t's box of each global tensor (an uneven cut: 4 + 3 rows, 1 + 1).
Box TpBox(const HostTensor& g, int t) {
  if (g.name() == "model/conv") return Box{{0, 0, t}, {3, 5, 1}};
  if (g.shape().size() == 2) return t == 0 ? Box{{0, 0}, {4, 13}} : Box{{4, 0}, {3, 13}};
  return Box::Whole(g.shape());
}

Shard RankShard(int rank) {
  Shard s;
  s.step = 100;
  s.epoch = 2;
  s.attributes["sampler_position"] = int64_t{rank * 10};
  s.attributes["parameters"] = std::string("fc.weight\nfc.bias\n");
  s.tensors.push_back(MakeTensor("rng/cpu", DType::kUInt8, {17}, 50 + rank));
  if (rank / kTp != 0) return s;  // dp replicas > 0 save only their own state
  for (const HostTensor& g : GlobalTensors()) {
    const Box box = TpBox(g, rank % kTp);
    s.tensors.push_back(SliceOf(g, box));
    if (box != Box::Whole(g.shape())) s.slices[g.name()] = {g.shape(), box.offsets};
  }
  return s;
}

class Sharded : public ::testing::Test {
 protected:
  void SetUp() override {
    uri_ = fmt::format("memory://sharded-{}",
                       ::testing::UnitTest::GetInstance()->random_seed() + counter_++);
    store_ = std::shared_ptr<ObjectStore>(OpenObjectStore(uri_));
    auto rdzv = std::make_shared<collectives::MemoryStore>();
    const auto errors = RunRanks(kTp * kDp, [&](int r) {
      CheckpointOptions o;
      o.run = "";
      o.rank = r;
      o.world_size = kTp * kDp;
      o.rendezvous = rdzv;
      o.layout = ShardedLayoutSpec({kDp, 1, kTp}, /*digest_block=*/64);
      Checkpointer(store_, o).Save(RankShard(r));
    });
    for (const auto& e : errors) ASSERT_FALSE(e) << "a rank's save failed";
  }
  RunDir run() { return RunDir::Of(*store_, ""); }

  static inline int counter_ = 0;
  std::string uri_;
  std::shared_ptr<ObjectStore> store_;
};

TEST_F(Sharded, ManifestRecordsMeshAndEveryTensorsShards) {
  const Manifest m = *ReadManifest(run(), "step-000000000100");
  EXPECT_EQ(m.format_version, 2);
  EXPECT_EQ(m.layout["mesh"], nlohmann::json({{"dp", 2}, {"pp", 1}, {"tp", 2}}));
  const auto& w = m.layout["tensors"]["model/fc.weight"];
  EXPECT_EQ(w["shape"], nlohmann::json({7, 13}));
  EXPECT_EQ(w["dtype"], "f32");
  ASSERT_EQ(w["shards"].size(), 2u);
  EXPECT_EQ(w["shards"][1]["rank"], 1);
  EXPECT_EQ(w["shards"][1]["offsets"], nlohmann::json({4, 0}));
  EXPECT_EQ(w["shards"][1]["sizes"], nlohmann::json({3, 13}));
  EXPECT_EQ(w["shards"][1]["digests"].size(), 3u);  // 156 bytes in 64-byte blocks
  EXPECT_EQ(m.layout["tensors"]["model/fc.bias"]["shards"].size(), 2u);  // tp replicas
  EXPECT_EQ(m.shards.size(), 4u);
  EXPECT_EQ(m.shards[3].contents["tensors"][0]["name"], "rng/cpu");
  // The shard files still hold each slice under its global name, as plain datasets.
  const LoadedSnapshot all = LoadSnapshot(run(), "step-000000000100");
  EXPECT_EQ(all.shards.at(1).Find("model/fc.weight")->shape(), Shape({3, 13}));
}

TEST_F(Sharded, ReadsBackAtOtherLayoutsBitExact) {
  ShardedReader reader(run(), "step-000000000100");
  for (const HostTensor& g : GlobalTensors()) ExpectSameTensor(g, reader.ReadWhole(g.name()));
  // tp = 3 on dim 0 (3 + 2 + 2 rows) and one odd interior box.
  const HostTensor w = GlobalTensors()[0];
  for (const Box& box :
       {Box{{0, 0}, {3, 13}}, Box{{3, 0}, {2, 13}}, Box{{5, 0}, {2, 13}}, Box{{2, 3}, {4, 7}}}) {
    ExpectSameTensor(SliceOf(w, box), reader.Read({w.name(), w.dtype(), w.shape(), box}));
  }
  const auto local = reader.ReadLocal(3);
  ASSERT_TRUE(local);
  ExpectSameTensor(MakeTensor("rng/cpu", DType::kUInt8, {17}, 53), local->tensors.at(0));
  EXPECT_EQ(std::get<int64_t>(local->attributes.at("sampler_position")), 30);
  EXPECT_EQ(local->step, 100);
  EXPECT_FALSE(reader.ReadLocal(4));
}

TEST_F(Sharded, ARankReadsOnlyTheBlocksItNeeds) {
  ShardedReader reader(run(), "step-000000000100");
  const HostTensor w = GlobalTensors()[3];  // f64 [7, 13]: 416 + 312 bytes saved
  reader.Read({w.name(), w.dtype(), w.shape(), Box{{6, 0}, {1, 13}}});  // the last row
  // 104 bytes needed; rank 1's slice starts at row 4, so row 6 is bytes 208..312: blocks 3-4.
  EXPECT_EQ(reader.bytes_read(), 312u - 192u);
}

TEST_F(Sharded, ALayoutThatCannotMapIsRefusedInOneLine) {
  ShardedReader reader(run(), "step-000000000100");
  try {
    reader.Read({"model/fc.weight", DType::kFloat32, {7, 14}, Box{{0, 0}, {7, 14}}});
    FAIL() << "accepted another global shape";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "checkpoint: tensor model/fc.weight has global shape [7, 13] (f32) in "
                 "step-000000000100 but the model wants [7, 14] (f32); "
                 "resume with the model it was saved from");
  }
  try {
    reader.Read({"model/fc2.weight", DType::kFloat32, {7, 13}, Box{{0, 0}, {7, 13}}});
    FAIL() << "accepted a missing tensor";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("tensor model/fc2.weight is not in step-000000000100"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

TEST_F(Sharded, TruncatedOrCorruptShardsAreDetected) {
  const std::string key = "step-000000000100/rank-1.h5";
  std::string bytes = *store_->Get(key);
  // A flipped byte inside rank 1's fc.weight rows fails that block's digest.
  const Manifest m = *ReadManifest(run(), "step-000000000100");
  const uint64_t at = m.layout["tensors"]["model/fc.weight"]["shards"][1]["offset"].get<uint64_t>();
  std::string flipped = bytes;
  flipped[at + 70] ^= 1;
  store_->Put(key, flipped);
  {
    ShardedReader reader(run(), "step-000000000100");
    try {
      reader.ReadWhole("model/fc.weight");
      FAIL() << "read a corrupt block";
    } catch (const DataLoss& e) {
      EXPECT_NE(std::string(e.what()).find("tensor model/fc.weight: block 1"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("(corrupt)"), std::string::npos) << e.what();
    }
    // Rows of rank 0 are untouched and still read.
    reader.Read({"model/fc.weight", DType::kFloat32, {7, 13}, Box{{0, 0}, {4, 13}}});
  }
  store_->Put(key, bytes.substr(0, bytes.size() - 100));
  ShardedReader reader(run(), "step-000000000100");
  try {
    reader.ReadWhole("model/fc.bias");  // its first copy is rank 0's, but conv needs rank 1
    reader.ReadWhole("model/conv");
    FAIL() << "read a truncated shard";
  } catch (const DataLoss& e) {
    EXPECT_NE(std::string(e.what()).find("rank-1.h5: "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(truncated)"), std::string::npos) << e.what();
  }
}

TEST_F(Sharded, ConsolidateWritesADataParallelSnapshot) {
  const std::string out = uri_ + "-out";
  const ConsolidateResult r = ConsolidateSnapshot(uri_, out);
  EXPECT_EQ(r.saved.name, "step-000000000100");
  auto out_store = OpenObjectStore(out);
  const RunDir out_run = RunDir::Of(*out_store, "");
  EXPECT_EQ(ReadLatest(out_run), "step-000000000100");
  EXPECT_TRUE(CheckSnapshot(out_run, "step-000000000100", /*digests=*/true).ok);
  const LoadedSnapshot snap = LoadSnapshot(out_run, "step-000000000100");
  EXPECT_EQ(snap.manifest.world_size, 1);
  EXPECT_EQ(snap.manifest.layout["kind"], "data_parallel");
  EXPECT_EQ(snap.manifest.format_version, 1);
  const Shard& s = snap.shards.at(0);
  const auto globals = GlobalTensors();
  for (int i = 0; i < 3; ++i) ExpectSameTensor(globals[i], *s.Find(globals[i].name()));
  // By-name optimizer state becomes by-index: fc.weight is parameter 0.
  const HostTensor* avg = s.Find("optimizer/0/exp_avg");
  ASSERT_TRUE(avg);
  EXPECT_EQ(std::memcmp(avg->data(), globals[3].data(), globals[3].nbytes()), 0);
  ASSERT_TRUE(s.Find("optimizer/0/step"));
  ASSERT_TRUE(s.Find("rng/cpu"));
  EXPECT_EQ(std::get<int64_t>(s.attributes.at("world_size")), 1);
  EXPECT_FALSE(s.attributes.count("parameters"));
  EXPECT_THROW(ConsolidateSnapshot(uri_, out), InvalidArgument);             // already there
  EXPECT_THROW(ConsolidateSnapshot(out, uri_ + "-again"), InvalidArgument);  // not sharded
}

TEST(ShardedSave, SlicesThatDoNotTileAreRefused) {
  auto store = std::shared_ptr<ObjectStore>(OpenObjectStore("memory://sharded-bad"));
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  const auto errors = RunRanks(2, [&](int r) {
    CheckpointOptions o;
    o.rank = r;
    o.world_size = 2;
    o.rendezvous = rdzv;
    o.layout = ShardedLayoutSpec({1, 1, 2});
    Shard s;
    s.step = 1;
    // Both ranks claim rows 0..3 of a [6, 2] tensor: overlapping, and rows 4..5 missing.
    s.tensors.push_back(MakeTensor("model/w", DType::kFloat32, {4, 2}, r));
    s.slices["model/w"] = {{6, 2}, {r, 0}};
    Checkpointer(store, o).Save(s);
  });
  ASSERT_TRUE(errors[0]);
  try {
    std::rethrow_exception(errors[0]);
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("tensor model/w: rank 1's box [1:5, 0:2] overlaps"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(ReadManifest(RunDir::Of(*store, ""), "step-000000000001"));  // nothing complete
  EXPECT_THROW(ShardedLayoutSpec({0, 1, 1}), InvalidArgument);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
