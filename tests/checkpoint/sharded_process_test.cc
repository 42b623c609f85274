// A sharded snapshot read by other programs: h5py opens a rank's shard file and finds its slice
// under the global tensor name, `cohort checkpoint inspect` shows the mesh and every tensor's
// shards, and `cohort checkpoint consolidate` writes an unsharded snapshot that `verify` passes
// and h5py reads whole.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "checkpoint/box.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/layout.h"
#include "collectives/store/memory_store.h"
#include "tests/checkpoint/checkpoint_test_util.h"
#include "tests/util/subprocess.h"

namespace cohort::checkpoint::testing {
namespace {

using namespace std::chrono_literals;
using cohort::testing::BinPath;
using cohort::testing::ProcessResult;
using cohort::testing::Subprocess;

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

ProcessResult RunProcess(const std::vector<std::string>& argv) {
  return Subprocess(argv, {{"COHORT_LOG_LEVEL", "warn"}}).Wait(60s);
}

// tp = 2: rank r holds rows [4r, 4r + 4) of model/fc.weight f32[8, 3], and the whole bias.
void SaveTp2(const std::string& uri) {
  auto store = std::shared_ptr<ObjectStore>(OpenObjectStore(uri));
  auto rdzv = std::make_shared<collectives::MemoryStore>();
  const HostTensor weight = MakeTensor("model/fc.weight", DType::kFloat32, {8, 3}, 1);
  const auto errors = RunRanks(2, [&](int r) {
    CheckpointOptions o;
    o.run = "run1";
    o.rank = r;
    o.world_size = 2;
    o.rendezvous = rdzv;
    o.layout = ShardedLayoutSpec({1, 1, 2});
    Shard s;
    s.step = 5;
    const Box box{{4 * r, 0}, {4, 3}};
    HostTensor slice = HostTensor::Allocate("model/fc.weight", DType::kFloat32, {4, 3});
    CopyRegion(weight.data(), Box::Whole({8, 3}), 0, slice.mutable_data(), box, box, 4);
    s.tensors.push_back(slice);
    s.slices["model/fc.weight"] = {{8, 3}, box.offsets};
    s.tensors.push_back(MakeTensor("model/fc.bias", DType::kFloat32, {8}, 2));
    s.tensors.push_back(MakeTensor("rng/cpu", DType::kUInt8, {16}, 10 + r));
    Checkpointer(store, o).Save(s);
  });
  for (const auto& e : errors) ASSERT_FALSE(e) << "a rank's save failed";
}

// The values MakeTensor gives model/fc.weight (seed 1), in numpy.
constexpr char kWeight[] = "((np.arange(24) * 7 + 13) % 61 - 30).reshape(8, 3) / 4";

TEST(ShardedInterop, H5pyInspectAndConsolidate) {
  if (RunProcess({"/usr/bin/python3", "-c", "import h5py"}).exit_code != 0) {
    GTEST_SKIP() << "h5py not importable from /usr/bin/python3 (Debian: python3-h5py)";
  }
  TempDir dir;
  const std::string uri = "file://" + dir.path();
  SaveTp2(uri);
  const std::string snap = uri + "/run1/step-000000000005";
  const std::string check_slice = fmt::format(R"PY(
import sys, h5py, numpy as np
w = {}
f = h5py.File(sys.argv[1], "r")
assert np.array_equal(f["model/fc.weight"][()], w[4:8]), f["model/fc.weight"][()]
print("slice ok")
)PY",
                                              kWeight);
  ProcessResult r = RunProcess(
      {"/usr/bin/python3", "-c", check_slice, dir.path() + "/run1/step-000000000005/rank-1.h5"});
  EXPECT_TRUE(Has(r.output, "slice ok")) << r.output;

  r = RunProcess({BinPath("cohort"), "checkpoint", "inspect", snap});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "world size 2, layout sharded")) << r.output;
  EXPECT_TRUE(Has(r.output, "mesh dp=1 pp=1 tp=2")) << r.output;
  EXPECT_TRUE(
      Has(r.output, "  tensor model/fc.weight  f32  [8, 3]: rank 0 [0:4, 0:3], rank 1 [4:8, 0:3]"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "  tensor model/fc.bias  f32  [8]: rank 0 [0:8], rank 1 [0:8]"))
      << r.output;

  const std::string out = uri + "/whole";
  r = RunProcess({BinPath("cohort"), "checkpoint", "consolidate", snap, out});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "consolidated " + snap + " into " + out + "/step-000000000005"))
      << r.output;
  r = RunProcess({BinPath("cohort"), "checkpoint", "verify", out});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "1 good, 0 bad")) << r.output;
  const std::string check_whole = fmt::format(R"PY(
import sys, h5py, numpy as np
w = {}
f = h5py.File(sys.argv[1], "r")
assert np.array_equal(f["model/fc.weight"][()], w)
assert f["model/fc.bias"].shape == (8,)
print("whole ok")
)PY",
                                              kWeight);
  r = RunProcess(
      {"/usr/bin/python3", "-c", check_whole, dir.path() + "/whole/step-000000000005/rank-0.h5"});
  EXPECT_TRUE(Has(r.output, "whole ok")) << r.output;
  // A second consolidation into the same folder is refused in one line, nothing overwritten.
  r = RunProcess({BinPath("cohort"), "checkpoint", "consolidate", snap, out});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "already holds a complete step-000000000005")) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

}  // namespace
}  // namespace cohort::checkpoint::testing
