// Snapshots read by other programs: h5dump and h5py open the shard files and show the tensors by
// name with the right values, and the real `cohort checkpoint ls|verify|inspect` commands report
// on snapshots with the right output and exit codes.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "checkpoint/checkpointer.h"
#include "checkpoint/shard_file.h"
#include "collectives/store/memory_store.h"
#include "tests/checkpoint/checkpoint_test_util.h"
#include "tests/util/subprocess.h"

namespace cohort::checkpoint::testing {
namespace {

using namespace std::chrono_literals;
using cohort::testing::BinPath;
using cohort::testing::ProcessResult;
using cohort::testing::Subprocess;

constexpr char kPython[] = "/usr/bin/python3";  // Debian's, with h5py
constexpr char kH5dump[] = "/usr/bin/h5dump";

ProcessResult RunProcess(const std::vector<std::string>& argv) {
  Subprocess p(argv, {{"COHORT_LOG_LEVEL", "warn"}});
  return p.Wait(60s);
}

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A shard with every dtype and odd shapes, written as a plain file.
Shard AllDTypesShard() {
  Shard shard;
  shard.step = 12;
  shard.epoch = 2;
  int seed = 0;
  for (DType dtype : collectives::kAllDTypes) {
    const std::string name = collectives::DTypeName(dtype);
    shard.tensors.push_back(MakeTensor("model/" + name + ".vec", dtype, {1031}, seed++));
    shard.tensors.push_back(MakeTensor("model/" + name + ".mat", dtype, {3, 5}, seed++));
    shard.tensors.push_back(MakeTensor("optimizer/0/" + name + ".empty", dtype, {0}, seed++));
    shard.tensors.push_back(MakeTensor("optimizer/0/" + name + ".scalar", dtype, {}, seed++));
  }
  shard.attributes["rng"] = Blob{{1, 2, 3}};
  shard.attributes["sampler.position"] = int64_t{4096};
  shard.attributes["lr"] = 0.25;
  shard.attributes["note"] = std::string("hello");
  return shard;
}

std::string WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(Interop, H5dumpShowsTensorsByNameWithTheirValues) {
  if (::access(kH5dump, X_OK) != 0) GTEST_SKIP() << "h5dump not installed (Debian: hdf5-tools)";
  TempDir dir;
  const Shard shard = AllDTypesShard();
  const std::string path = WriteFile(dir.path() + "/rank-0.h5", EncodeShard(shard, 0).ToString());
  const ProcessResult header = RunProcess({kH5dump, "-H", path});
  ASSERT_EQ(header.exit_code, 0) << header.output;
  for (const char* part :
       {"GROUP \"model\"", "DATASET \"f32.vec\"", "DATASET \"bf16.mat\"", "GROUP \"optimizer\"",
        "DATASET \"u8.scalar\"", "GROUP \"meta\"", "ATTRIBUTE \"sampler.position\"",
        "DATASPACE  SIMPLE { ( 3, 5 ) / ( 3, 5 ) }", "DATASPACE  SIMPLE { ( 0 ) / ( 0 ) }",
        "DATASPACE  SCALAR"}) {
    EXPECT_TRUE(Has(header.output, part)) << part << " missing in\n" << header.output;
  }
  // Values, including bf16 and f16 (HDF5 converts both to floats for printing).
  for (const char* dtype : {"f32", "bf16", "f16", "i64"}) {
    const int seed = 4 * static_cast<int>(collectives::ParseDType(dtype));
    const ProcessResult data =
        RunProcess({kH5dump, "-d", fmt::format("/model/{}.mat", dtype), path});
    ASSERT_EQ(data.exit_code, 0) << data.output;
    const DType t = collectives::ParseDType(dtype);
    std::string want = "(0,0): ";
    for (int i = 0; i < 3; ++i) {
      want += fmt::format("{}{}", i ? ", " : "", ExpectedValue(t, i, seed + 1));
    }
    EXPECT_TRUE(Has(data.output, want)) << want << " missing in\n" << data.output;
  }
}

TEST(Interop, H5pyReadsEveryDTypeWithTheRightValues) {
  if (RunProcess({kPython, "-c", "import h5py"}).exit_code != 0) {
    GTEST_SKIP() << "h5py not importable from /usr/bin/python3 (Debian: python3-h5py)";
  }
  TempDir dir;
  const Shard shard = AllDTypesShard();
  const std::string path = WriteFile(dir.path() + "/rank-0.h5", EncodeShard(shard, 0).ToString());
  // The same formula as ExpectedValue(), in numpy; bf16 reads as float32, f16 as float16.
  const std::string script = R"PY(
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
names = ["f32", "f64", "f16", "bf16", "i32", "i64", "u8"]
kinds = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "float32",
         "i32": "int32", "i64": "int64", "u8": "uint8"}
checked = 0
for d, name in enumerate(names):
    for k, (path, n) in enumerate([("model/%s.vec" % name, 1031), ("model/%s.mat" % name, 15),
                                   ("optimizer/0/%s.empty" % name, 0),
                                   ("optimizer/0/%s.scalar" % name, 1)]):
        ds = f[path]
        seed = 4 * d + k
        i = np.arange(n)
        if name == "u8":
            want = (i + seed) % 251
        else:
            want = ((i * 7 + seed * 13) % 61) - 30
            if name.startswith("f") or name == "bf16":
                want = want / 4
        got = np.asarray(ds[()]).reshape(-1)
        assert str(ds.dtype) == kinds[name], (path, ds.dtype)
        assert ds.attrs["dtype"].decode() == name, (path, ds.attrs["dtype"])
        assert np.array_equal(got.astype(np.float64), want.astype(np.float64)), (path, got[:5], want[:5])
        checked += 1
assert f["model/f32.mat"].shape == (3, 5)
assert f["optimizer/0/u8.scalar"].shape == ()
m = f["meta"].attrs
assert int(m["step"]) == 12 and int(m["epoch"]) == 2 and int(m["sampler.position"]) == 4096
assert list(m["rng"]) == [1, 2, 3] and float(m["lr"]) == 0.25 and m["note"] == b"hello"
print("h5py checked", checked, "datasets")
)PY";
  const ProcessResult r = RunProcess({kPython, "-c", script, path});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "h5py checked 28 datasets")) << r.output;
}

// ---- the `cohort checkpoint` commands ----

class CheckpointCommand : public ::testing::Test {
 protected:
  // Snapshots 100, 200, 300 of run "run7" by 3 ranks, and an incomplete 400 (no manifest).
  void SetUp() override {
    uri_ = "file://" + dir_.path();
    auto store = std::shared_ptr<ObjectStore>(OpenObjectStore(uri_));
    auto rdzv = std::make_shared<collectives::MemoryStore>();
    const auto errors = RunRanks(3, [&](int r) {
      CheckpointOptions o;
      o.run = "run7";
      o.rank = r;
      o.world_size = 3;
      o.rendezvous = rdzv;
      Checkpointer ckpt(store, o);
      for (int64_t step : {100, 200, 300}) ckpt.Save(MakeShard(step, r));
    });
    for (const auto& e : errors) ASSERT_FALSE(e) << "a rank's save failed";
    store->Put("run7/step-000000000400/rank-0.h5", EncodeShard(MakeShard(400, 0), 0).ToString());
  }
  std::vector<std::string> Cohort(std::vector<std::string> args) {
    args.insert(args.begin(), {BinPath("cohort"), "checkpoint"});
    return args;
  }

  TempDir dir_;
  std::string uri_;
};

TEST_F(CheckpointCommand, LsListsEverySnapshotWithItsStatus) {
  const ProcessResult r = RunProcess(Cohort({"ls", uri_}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "RUN   SNAPSHOT           STEP  WORLD  STATUS")) << r.output;
  EXPECT_TRUE(Has(r.output, "run7  step-000000000100   100      3  complete")) << r.output;
  EXPECT_TRUE(Has(r.output, "run7  step-000000000400   400      -  incomplete")) << r.output;
  EXPECT_TRUE(Has(r.output, "KiB  latest\n")) << r.output;  // on step 300's line
  const ProcessResult run = RunProcess(Cohort({"ls", uri_ + "/run7"}));
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(Has(run.output, ".    step-000000000300   300      3  complete")) << run.output;
}

TEST_F(CheckpointCommand, VerifyNamesTheBadShardAndFails) {
  ProcessResult r = RunProcess(Cohort({"verify", uri_}));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(
      Has(r.output, "OK          " + uri_ + "/run7/step-000000000300  step 300, 3 shard(s)"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "INCOMPLETE  " + uri_ + "/run7/step-000000000400")) << r.output;
  EXPECT_TRUE(Has(r.output, "3 good, 0 bad")) << r.output;

  // Flip a bit of rank 1's shard of step 200 and cut rank 2's of step 300 short.
  const std::string s200 = dir_.path() + "/run7/step-000000000200/rank-1.h5";
  std::fstream f(s200, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(200);
  char c = 0;
  f.read(&c, 1);
  c ^= 1;
  f.seekp(200);
  f.write(&c, 1);
  f.close();
  ASSERT_EQ(::truncate((dir_.path() + "/run7/step-000000000300/rank-2.h5").c_str(), 1000), 0);

  r = RunProcess(Cohort({"verify", uri_}));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "BAD         " + uri_ + "/run7/step-000000000200  rank-1.h5: digest"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "step-000000000300  rank-2.h5: 1000 bytes but the manifest says"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "(truncated)")) << r.output;
  EXPECT_TRUE(Has(r.output, "loads fall back to an older one")) << r.output;
  EXPECT_TRUE(Has(r.output, "1 good, 2 bad")) << r.output;
  // One snapshot by its URI.
  r = RunProcess(Cohort({"verify", uri_ + "/run7/step-000000000100"}));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunProcess(Cohort({"verify", uri_ + "/run7/step-000000000400"}));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  // ls sees the truncation (sizes) but not the flipped bit (that takes verify).
  r = RunProcess(Cohort({"ls", uri_}));
  EXPECT_TRUE(Has(r.output, "step-000000000300   300      3  CORRUPT")) << r.output;
  EXPECT_TRUE(Has(r.output, "step-000000000200   200      3  complete")) << r.output;
}

TEST_F(CheckpointCommand, InspectShowsTensorsDTypesShapesAndMetadata) {
  ProcessResult r = RunProcess(Cohort({"inspect", uri_ + "/run7"}));  // its latest: 300
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "snapshot " + uri_ + "/run7/step-000000000300\n")) << r.output;
  EXPECT_TRUE(Has(r.output,
                  "run run7, step 300, epoch 30, world size 3, layout "
                  "{\"kind\":\"data_parallel\"}"))
      << r.output;
  EXPECT_TRUE(Has(r.output, "rank 0: step 300, epoch 30, 4 tensor(s)")) << r.output;
  EXPECT_TRUE(Has(r.output, "  model/fc1.weight     f32   [7,13]            364 B")) << r.output;
  EXPECT_TRUE(Has(r.output, "  optimizer/0/step     i64   []                8 B")) << r.output;
  EXPECT_TRUE(Has(r.output, "  meta rng = <5056 bytes>")) << r.output;
  EXPECT_TRUE(Has(r.output, "  meta sampler.position = 19202")) << r.output;  // 300 * 64 + 2
  EXPECT_TRUE(Has(r.output, "shard rank-2.h5  rank 2")) << r.output;

  r = RunProcess(Cohort({"inspect", "--rank", "1", uri_ + "/run7/step-000000000100"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "rank 1: step 100, epoch 10, 0 tensor(s)")) << r.output;
  EXPECT_FALSE(Has(r.output, "rank 0: ")) << r.output;
}

TEST_F(CheckpointCommand, BadInputIsOneLineAndANonZeroExit) {
  ProcessResult r = RunProcess(Cohort({"ls", "ftp://x"}));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "unsupported checkpoint URI 'ftp://x'")) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  r = RunProcess(Cohort({"verify", uri_ + "/nothing-here"}));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "no snapshots under")) << r.output;
  r = RunProcess(Cohort({"inspect"}));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = RunProcess(Cohort({"inspect", uri_ + "/run7/step-000000000400"}));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "has no manifest.json: it is incomplete")) << r.output;
}

}  // namespace
}  // namespace cohort::checkpoint::testing
