// The torch side of runtime/: View() (torch::Tensor -> TensorView) for every dtype and each way a
// tensor can be refused; a ProcessGroup of one process from a clean environment; and TorchSampler
// driving a real torch::data loader.
#include "runtime/process_group.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/data/dataloader.h>
#include <torch/data/datasets/base.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <sstream>

#include "common/error.h"
#include "runtime/torch_sampler.h"
#include "tests/util/scoped_env.h"

namespace cohort::runtime {
namespace {

using collectives::DType;
using collectives::ReduceOp;

// The message of the InvalidArgument f throws ("" and a failure when it throws nothing).
template <typename F>
std::string ErrorOf(F f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InvalidArgument thrown";
  return "";
}

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- View ----

struct DTypeCase {
  at::ScalarType torch;
  DType ours;
  size_t bytes;
};

TEST(View, MapsEveryCollectiveDType) {
  const DTypeCase cases[] = {
      {at::kFloat, DType::kFloat32, 4}, {at::kDouble, DType::kFloat64, 8},
      {at::kHalf, DType::kFloat16, 2},  {at::kBFloat16, DType::kBFloat16, 2},
      {at::kInt, DType::kInt32, 4},     {at::kLong, DType::kInt64, 8},
      {at::kByte, DType::kUInt8, 1},
  };
  for (const auto& c : cases) {
    at::Tensor t = at::ones({3, 5}, at::TensorOptions().dtype(c.torch));
    const collectives::TensorView v = View(t);
    EXPECT_EQ(v.dtype, c.ours) << c.torch;
    EXPECT_EQ(v.count, 15u) << c.torch;
    EXPECT_EQ(v.bytes(), 15 * c.bytes) << c.torch;
    EXPECT_EQ(v.data, t.data_ptr()) << c.torch;
    EXPECT_EQ(v.device.type, collectives::DeviceType::kCPU);
    EXPECT_EQ(v.device.index, -1);
  }
}

TEST(View, ContiguousSliceAndEmptyTensorAreViewedInPlace) {
  at::Tensor base = at::arange(20, at::TensorOptions().dtype(at::kFloat));
  at::Tensor slice = base.narrow(0, 5, 7);  // contiguous, at an offset
  const auto v = View(slice);
  EXPECT_EQ(v.count, 7u);
  EXPECT_EQ(static_cast<float*>(v.data), base.data_ptr<float>() + 5);
  EXPECT_EQ(static_cast<float*>(v.data)[0], 5.0f);
  EXPECT_EQ(View(at::empty({0, 4})).count, 0u);
  EXPECT_EQ(View(at::scalar_tensor(2.5)).count, 1u);  // 0-d
}

TEST(View, NonContiguousIsRefusedWithTheFix) {
  at::Tensor t = at::zeros({4, 6}).t();
  const std::string msg = ErrorOf([&] { View(t, "grad of fc1.weight"); });
  EXPECT_TRUE(Has(msg, "grad of fc1.weight")) << msg;
  EXPECT_TRUE(Has(msg, "not contiguous")) << msg;
  EXPECT_TRUE(Has(msg, ".contiguous()")) << msg;
  EXPECT_TRUE(Has(msg, "[6, 4]")) << msg;  // the shape
  EXPECT_TRUE(Has(msg, "Float")) << msg;   // the dtype
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // Strided views refused too; the contiguous copy is accepted.
  EXPECT_THROW(View(at::arange(10).slice(0, 0, 10, 2)), InvalidArgument);
  EXPECT_EQ(View(t.contiguous()).count, 24u);
}

TEST(View, UndefinedIsRefused) {
  const std::string msg = ErrorOf([] { View(at::Tensor(), "bucket 3"); });
  EXPECT_TRUE(Has(msg, "bucket 3")) << msg;
  EXPECT_TRUE(Has(msg, "undefined")) << msg;
}

TEST(View, BoolComplexAndOtherDTypesAreRefusedNamingTheDType) {
  at::Tensor mask = at::ones({2, 3}, at::TensorOptions().dtype(at::kBool));
  const std::string msg = ErrorOf([&] { View(mask, "mask"); });
  EXPECT_TRUE(Has(msg, "mask")) << msg;
  EXPECT_TRUE(Has(msg, "Bool")) << msg;
  EXPECT_TRUE(Has(msg, "[2, 3]")) << msg;
  EXPECT_TRUE(Has(msg, "kUInt8")) << msg;  // how to fix it
  for (at::ScalarType st : {at::kComplexFloat, at::kChar, at::kShort}) {
    at::Tensor t = at::zeros({2}, at::TensorOptions().dtype(st));
    EXPECT_TRUE(Has(ErrorOf([&] { View(t); }), "cannot move")) << st;
  }
}

TEST(View, SparseIsRefused) {
  at::Tensor sparse = at::eye(3).to_sparse();
  EXPECT_TRUE(Has(ErrorOf([&] { View(sparse, "emb.grad"); }), ".to_dense()"));
}

// ---- ProcessGroup of one ----

// Unsets every variable a world or a store could come from.
testing::ScopedEnv CleanEnv() {
  return testing::ScopedEnv{{"COHORT_RANK", std::nullopt},
                            {"COHORT_WORLD_SIZE", std::nullopt},
                            {"COHORT_STORE", std::nullopt},
                            {"COHORT_BACKEND", std::nullopt},
                            {"MASTER_ADDR", std::nullopt},
                            {"MASTER_PORT", std::nullopt},
                            {"RANK", std::nullopt},
                            {"WORLD_SIZE", std::nullopt},
                            {"OMPI_COMM_WORLD_SIZE", std::nullopt},
                            {"OMPI_COMM_WORLD_RANK", std::nullopt},
                            {"OMPI_MCA_ess_base_jobid", std::nullopt},
                            {"SLURM_NTASKS", std::nullopt},
                            {"COHORT_LOG_LEVEL", "warn"}};
}

TEST(ProcessGroup, AloneWithoutAnyEnvIsAWorldOfOne) {
  auto env = CleanEnv();
  auto pg = ProcessGroup::FromEnv();
  ASSERT_NE(pg, nullptr);
  EXPECT_EQ(pg->Rank(), 0);
  EXPECT_EQ(pg->Size(), 1);
  EXPECT_STREQ(pg->Backend(), "gloo");
  ASSERT_NE(pg->store(), nullptr);
  pg->store()->Set("k", "v");  // the in-memory store works
  EXPECT_EQ(pg->store()->Get("k", std::chrono::milliseconds(0)), "v");

  at::Tensor t = at::arange(7, at::TensorOptions().dtype(at::kFloat)) * 3;
  pg->AllReduce(t)->Wait();
  EXPECT_TRUE(at::equal(t, at::arange(7, at::TensorOptions().dtype(at::kFloat)) * 3));
  pg->AllReduce(t, ReduceOp::kAvg)->Wait();
  EXPECT_TRUE(at::equal(t, at::arange(7, at::TensorOptions().dtype(at::kFloat)) * 3));
  at::Tensor b = at::full({2, 2}, 4.0, at::TensorOptions().dtype(at::kDouble));
  pg->Broadcast(b, 0)->Wait();
  EXPECT_EQ(b.sum().item<double>(), 16.0);
  at::Tensor in = at::arange(5, at::TensorOptions().dtype(at::kLong));
  at::Tensor out = at::zeros({5}, at::TensorOptions().dtype(at::kLong));
  pg->AllGather(in, out)->Wait();
  EXPECT_TRUE(at::equal(in, out));
  pg->Barrier();
  // Tensor errors surface through the group with the tensor's role named.
  EXPECT_TRUE(Has(ErrorOf([&] { pg->AllReduce(at::zeros({3, 3}).t()); }), "all-reduce tensor"));
  EXPECT_TRUE(Has(ErrorOf([&] { pg->AllGather(in, at::Tensor()); }), "all-gather output"));
}

TEST(ProcessGroup, BackendOptionAndEnvAreHonoured) {
  {
    auto env = CleanEnv();
    ProcessGroupOptions o;
    o.backend = "no-such-backend";
    EXPECT_THROW(ProcessGroup::FromEnv(o), InvalidArgument);
  }
  auto env = CleanEnv();
  testing::ScopedEnv backend{{"COHORT_BACKEND", "no-such-backend"}};
  EXPECT_THROW(ProcessGroup::FromEnv(), InvalidArgument);
  ProcessGroupOptions o;
  o.backend = "gloo";  // the option wins over the environment
  o.name = "second";
  EXPECT_STREQ(ProcessGroup::FromEnv(o)->Backend(), "gloo");
}

TEST(ProcessGroup, ALargerWorldWithoutAStoreSaysWhatToSet) {
  auto env = CleanEnv();
  testing::ScopedEnv world{{"COHORT_RANK", "0"}, {"COHORT_WORLD_SIZE", "2"}};
  const std::string msg = ErrorOf([] { ProcessGroup::FromEnv(); });
  EXPECT_TRUE(Has(msg, "COHORT_STORE")) << msg;
  EXPECT_TRUE(Has(msg, "MASTER_ADDR")) << msg;
}

// ---- TorchSampler with a torch::data loader ----

// Example i is the tensor {i}.
class Numbers : public torch::data::datasets::Dataset<Numbers> {
 public:
  explicit Numbers(size_t n) : n_(n) {}
  torch::data::Example<> get(size_t i) override {
    return {at::full({1}, static_cast<int64_t>(i), at::TensorOptions().dtype(at::kLong)),
            at::zeros({1})};
  }
  torch::optional<size_t> size() const override { return n_; }

 private:
  size_t n_;
};

template <typename Loader>
std::vector<size_t> Drain(Loader& loader, size_t max_batches = SIZE_MAX) {
  std::vector<size_t> seen;
  size_t batches = 0;
  for (auto& batch : loader) {
    for (auto& ex : batch) seen.push_back(static_cast<size_t>(ex.data.template item<int64_t>()));
    if (++batches == max_batches) break;
  }
  return seen;
}

TEST(TorchSampler, DataLoaderYieldsTheRanksShareEachEpoch) {
  auto sampler = std::make_shared<DistributedSampler>(103, 1, 3, true, 5);
  auto loader = torch::data::make_data_loader(Numbers(103), TorchSampler(sampler),
                                              torch::data::DataLoaderOptions().batch_size(10));
  std::vector<size_t> previous;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    sampler->SetEpoch(epoch);
    const std::vector<size_t> seen = Drain(*loader);
    EXPECT_EQ(seen, sampler->Indices()) << "epoch " << epoch;
    EXPECT_EQ(seen.size(), 35u);
    EXPECT_NE(seen, previous);
    previous = seen;
  }
  // Iterating again without SetEpoch repeats the same epoch (as torch's samplers do).
  EXPECT_EQ(Drain(*loader), previous);
}

TEST(TorchSampler, RestoredPositionSurvivesBeginAndSaveLoadRoundTrips) {
  auto first = std::make_shared<DistributedSampler>(103, 0, 2, true, 9);
  first->SetEpoch(4);
  {
    auto loader = torch::data::make_data_loader(Numbers(103), TorchSampler(first),
                                                torch::data::DataLoaderOptions().batch_size(8));
    EXPECT_EQ(Drain(*loader, 2).size(), 16u);
  }
  EXPECT_EQ(first->State().position, 16u);
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive archive;
    TorchSampler(first).save(archive);
    archive.save_to(buffer);
  }
  // The restart: a fresh sampler with another seed, restored from the archive.
  auto second = std::make_shared<DistributedSampler>(103, 0, 2, true, 0);
  {
    torch::serialize::InputArchive archive;
    archive.load_from(buffer);
    TorchSampler(second).load(archive);
  }
  EXPECT_EQ(second->Epoch(), 4);
  EXPECT_EQ(second->State().seed, 9u);
  auto loader = torch::data::make_data_loader(Numbers(103), TorchSampler(second),
                                              torch::data::DataLoaderOptions().batch_size(8));
  const std::vector<size_t> rest = Drain(*loader);
  const auto& all = first->Indices();
  EXPECT_EQ(rest, std::vector<size_t>(all.begin() + 16, all.end()));
}

TEST(TorchSampler, RefusesAnotherDatasetSizeAndForeignArchives) {
  auto s = std::make_shared<DistributedSampler>(10, 0, 1);
  TorchSampler ts(s);
  EXPECT_THROW(ts.reset(size_t{11}), InvalidArgument);
  ts.reset(size_t{10});
  torch::serialize::OutputArchive out;
  out.write("something", c10::IValue(int64_t{1}));
  std::stringstream buffer;
  out.save_to(buffer);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  EXPECT_TRUE(Has(ErrorOf([&] { ts.load(in); }), "TorchSampler::save"));
  EXPECT_THROW(TorchSampler(nullptr), InvalidArgument);
}

}  // namespace
}  // namespace cohort::runtime
