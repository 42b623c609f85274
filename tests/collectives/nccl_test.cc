// Tests of the NCCL backend. Suites named Nccl...Gpu need a GPU and skip, with the reason, without
// one (the build machines and CI have none); the others run everywhere and cover the no-GPU path,
// the error mapping of the CUDA and NCCL checks, and device selection.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "collectives/nccl/cuda_device.h"
#include "collectives/nccl/nccl_communicator.h"
#include "collectives/registry.h"
#include "collectives/store/memory_store.h"
#include "common/check_cuda.h"
#include "tests/collectives/expected_values.h"

namespace cohort::testing {
namespace {

using namespace collectives;
using namespace std::chrono_literals;

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

CommConfig SingleRank() {
  CommConfig c;
  c.rank = 0;
  c.size = 1;
  c.store = std::make_shared<MemoryStore>();
  c.timeout = 60s;
  return c;
}

// ---- everywhere: the checks ----

TEST(CheckCuda, MapsErrorsToKindsWithCallAndMessage) {
  try {
    COHORT_CHECK_CUDA(cudaErrorInsufficientDriver);
    FAIL() << "no throw";
  } catch (const Unavailable& e) {
    EXPECT_TRUE(Contains(e.what(), "cudaErrorInsufficientDriver")) << e.what();
    EXPECT_TRUE(Contains(e.what(), "nccl_test.cc")) << e.what();
    EXPECT_TRUE(Contains(Lower(e.what()), "driver")) << e.what();
  }
  EXPECT_THROW(COHORT_CHECK_CUDA(cudaErrorNoDevice), Unavailable);
  EXPECT_THROW(COHORT_CHECK_CUDA(cudaErrorMemoryAllocation), Unavailable);
  EXPECT_THROW(COHORT_CHECK_CUDA(cudaErrorInvalidValue), InvalidArgument);
  EXPECT_THROW(COHORT_CHECK_CUDA(cudaErrorInvalidDevice), InvalidArgument);
  EXPECT_THROW(COHORT_CHECK_CUDA(cudaErrorLaunchTimeout), Timeout);
  EXPECT_THROW(COHORT_CHECK_CUDA(cudaErrorIllegalAddress), Internal);
  EXPECT_NO_THROW(COHORT_CHECK_CUDA(cudaSuccess));
}

TEST(CheckNccl, MapsResultsToKinds) {
  try {
    COHORT_CHECK_NCCL(ncclInvalidArgument);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(Contains(e.what(), ncclGetErrorString(ncclInvalidArgument))) << e.what();
    EXPECT_TRUE(Contains(e.what(), "ncclInvalidArgument")) << e.what();  // the call text
    EXPECT_FALSE(Contains(e.what(), "\n")) << e.what();
  }
  EXPECT_THROW(COHORT_CHECK_NCCL(ncclInvalidUsage), InvalidArgument);
  EXPECT_THROW(COHORT_CHECK_NCCL(ncclRemoteError), PeerFailure);
  EXPECT_THROW(COHORT_CHECK_NCCL(ncclSystemError), PeerFailure);
  EXPECT_THROW(COHORT_CHECK_NCCL(ncclUnhandledCudaError), Unavailable);
  EXPECT_THROW(COHORT_CHECK_NCCL(ncclInternalError), Internal);
  EXPECT_THROW(COHORT_CHECK_NCCL(ncclInProgress), Internal);
  EXPECT_NO_THROW(COHORT_CHECK_NCCL(ncclSuccess));
}

TEST(CudaDevice, DeviceForRankWrapsTheLocalRank) {
  EXPECT_EQ(DeviceForRank(5, 3, 2), 1);
  EXPECT_EQ(DeviceForRank(5, 0, 8), 0);
  EXPECT_EQ(DeviceForRank(9, -1, 8), 1);  // no local rank: the global one
  EXPECT_EQ(DeviceForRank(0, -1, 1), 0);
  EXPECT_THROW(DeviceForRank(0, 0, 0), InvalidArgument);
}

// ---- everywhere: no GPU is a clean, explained refusal ----

class NcclUnavailable : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present; these tests cover its absence";
  }
};

TEST_F(NcclUnavailable, DeviceCountIsZeroWithAOneLineReason) {
  std::string why;
  EXPECT_EQ(CudaDeviceCount(&why), 0);
  EXPECT_FALSE(why.empty());
  EXPECT_FALSE(Contains(why, "\n")) << why;
  EXPECT_TRUE(Contains(why, "GPU")) << why;
}

TEST_F(NcclUnavailable, ReasonIsOneLineNamingTheGpuOrDriver) {
  const std::string why = NcclCommunicator::UnavailableReason(SingleRank());
  ASSERT_FALSE(why.empty());
  EXPECT_FALSE(Contains(why, "\n")) << why;
  EXPECT_TRUE(Contains(why, "GPU")) << why;
  // Here there is no driver at all (cudaErrorInsufficientDriver); elsewhere no device.
  const std::string lower = Lower(why);
  EXPECT_TRUE(Contains(lower, "driver") || Contains(lower, "no cuda gpu")) << why;
}

TEST_F(NcclUnavailable, CreateCommunicatorThrowsUnavailableWithTheReason) {
  const CommConfig config = SingleRank();
  const std::string why = NcclCommunicator::UnavailableReason(config);
  try {
    CreateCommunicator("nccl", config, DeviceType::kCUDA);
    FAIL() << "no throw";
  } catch (const Unavailable& e) {
    EXPECT_TRUE(Contains(e.what(), why)) << e.what();
    EXPECT_TRUE(Contains(e.what(), "nccl")) << e.what();
  }
}

TEST_F(NcclUnavailable, ConstructorThrowsUnavailable) {
  EXPECT_THROW(NcclCommunicator{SingleRank()}, Unavailable);
  EXPECT_THROW((NcclCommunicator{SingleRank(), 0}), Unavailable);
}

TEST_F(NcclUnavailable, AutoForCudaTensorsFailsCleanly) {
  const CommConfig config = SingleRank();
  const std::string why = NcclCommunicator::UnavailableReason(config);
  try {
    CreateCommunicator("auto", config, DeviceType::kCUDA);
    FAIL() << "auto found a backend for CUDA tensors without a GPU";
  } catch (const Unavailable& e) {
    EXPECT_TRUE(Contains(e.what(), "nccl: " + why)) << e.what();
    EXPECT_FALSE(Contains(e.what(), "\n")) << e.what();
  }
}

// ---- GPU: a single-rank communicator over a MemoryStore ----

// cudaMalloc'd memory, freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) COHORT_CHECK_CUDA(cudaMalloc(&data_, bytes));
  }
  ~DeviceBuffer() {
    if (data_) (void)cudaFree(data_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return data_; }
  char* bytes_at(size_t offset) const { return static_cast<char*>(data_) + offset; }
  void Upload(const std::vector<uint8_t>& host) const {
    if (!host.empty())
      COHORT_CHECK_CUDA(cudaMemcpy(data_, host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  std::vector<uint8_t> Download(size_t offset, size_t bytes) const {
    std::vector<uint8_t> host(bytes);
    if (bytes)
      COHORT_CHECK_CUDA(cudaMemcpy(host.data(), bytes_at(offset), bytes, cudaMemcpyDeviceToHost));
    return host;
  }
  void Fill(uint8_t byte) const {
    if (bytes_) COHORT_CHECK_CUDA(cudaMemset(data_, byte, bytes_));
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Inputs of rank 0 for the k-th operation, encoded in dtype.
std::vector<uint8_t> Inputs(DType dtype, size_t n, int k) {
  std::vector<uint8_t> host(n * ElementSize(dtype));
  for (size_t i = 0; i < n; ++i) StoreExact(dtype, host.data(), i, InputValue(dtype, 0, i, k));
  return host;
}

// Checks a downloaded result against the reduction over one rank; reports the first mismatch.
void ExpectReduced(DType dtype, ReduceOp op, const std::vector<uint8_t>& got, size_t n, int k,
                   const std::string& what) {
  for (size_t i = 0; i < n; ++i) {
    const double want = Expected(dtype, op, 1, i, k);
    const double value = Load(dtype, got.data(), i);
    if (!Close(dtype, op, value, want)) {
      ADD_FAILURE() << what << ": element " << i << " is " << value << ", want " << want;
      return;
    }
  }
}

class NcclGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (CudaDeviceCount(&why) == 0) GTEST_SKIP() << why;
    comm_ = std::make_unique<NcclCommunicator>(SingleRank());
    device_ = comm_->device();
  }
  TensorView View(void* data, size_t n, DType dtype) const {
    return TensorView(data, n, dtype, Device{DeviceType::kCUDA, device_});
  }
  void CheckEveryOp(DType dtype, size_t n);

  std::unique_ptr<NcclCommunicator> comm_;
  int device_ = 0;
};

// Every op on n elements of dtype, in and out of place, against the host's reduction.
void NcclGpu::CheckEveryOp(DType dtype, size_t n) {
  SCOPED_TRACE(std::string(DTypeName(dtype)) + "[" + std::to_string(n) + "]");
  const size_t bytes = n * ElementSize(dtype);
  DeviceBuffer a(bytes), b(bytes);
  int k = 0;
  for (ReduceOp op : kAllReduceOps) {
    SCOPED_TRACE(ReduceOpName(op));
    // In place.
    auto in = Inputs(dtype, n, ++k);
    a.Upload(in);
    comm_->AllReduce(View(a.data(), n, dtype), op)->Wait();
    ExpectReduced(dtype, op, a.Download(0, bytes), n, k, "allreduce in place");
    // Out of place: out is overwritten, in is left alone.
    b.Fill(0xff);
    comm_->AllReduce(View(a.data(), n, dtype), View(b.data(), n, dtype), op)->Wait();
    ExpectReduced(dtype, op, b.Download(0, bytes), n, k, "allreduce out of place");
    // ReduceScatter over one rank: out is the whole reduction; in place when out is in's slice.
    a.Upload(in);
    b.Fill(0xff);
    comm_->ReduceScatter(View(a.data(), n, dtype), View(b.data(), n, dtype), op)->Wait();
    ExpectReduced(dtype, op, b.Download(0, bytes), n, k, "reducescatter");
    EXPECT_EQ(a.Download(0, bytes), in) << "reducescatter changed its input";
    comm_->ReduceScatter(View(a.data(), n, dtype), View(a.data(), n, dtype), op)->Wait();
    ExpectReduced(dtype, op, a.Download(0, bytes), n, k, "reducescatter in place");
  }
  const auto in = Inputs(dtype, n, ++k);
  a.Upload(in);
  comm_->Broadcast(View(a.data(), n, dtype), 0)->Wait();
  EXPECT_EQ(a.Download(0, bytes), in) << "broadcast from the only rank changed the data";
  b.Fill(0xff);
  comm_->AllGather(View(a.data(), n, dtype), View(b.data(), n, dtype))->Wait();
  EXPECT_EQ(b.Download(0, bytes), in) << "allgather out of place";
  comm_->AllGather(View(a.data(), n, dtype), View(a.data(), n, dtype))->Wait();
  EXPECT_EQ(a.Download(0, bytes), in) << "allgather in place";
  auto barrier = comm_->Barrier();
  barrier->Wait();
  EXPECT_TRUE(barrier->IsSuccess());
}

// One test per dtype (plain names, so that ctest -R can pick them), each over every count.
#define COHORT_NCCL_DTYPE_TEST(Name, dtype)                                              \
  TEST_F(NcclGpu, EveryOpMatchesTheHost##Name) {                                         \
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1031}, size_t{16} << 20}) { \
      CheckEveryOp(dtype, n);                                                            \
    }                                                                                    \
  }
COHORT_NCCL_DTYPE_TEST(F32, DType::kFloat32)
COHORT_NCCL_DTYPE_TEST(F64, DType::kFloat64)
COHORT_NCCL_DTYPE_TEST(F16, DType::kFloat16)
COHORT_NCCL_DTYPE_TEST(BF16, DType::kBFloat16)
COHORT_NCCL_DTYPE_TEST(I32, DType::kInt32)
COHORT_NCCL_DTYPE_TEST(I64, DType::kInt64)
COHORT_NCCL_DTYPE_TEST(U8, DType::kUInt8)
#undef COHORT_NCCL_DTYPE_TEST

TEST_F(NcclGpu, ReportsItsBackendAndDevice) {
  EXPECT_STREQ(comm_->Backend(), "nccl");
  EXPECT_EQ(comm_->Devices(), DeviceType::kCUDA);
  EXPECT_EQ(comm_->Size(), 1);
  EXPECT_EQ(NcclCommunicator::UnavailableReason(SingleRank()), "");
}

TEST_F(NcclGpu, ZeroElementsWithNullPointers) {
  for (DType dtype : kAllDTypes) {
    comm_->AllReduce(View(nullptr, 0, dtype), ReduceOp::kSum)->Wait();
    comm_->Broadcast(View(nullptr, 0, dtype), 0)->Wait();
    comm_->AllGather(View(nullptr, 0, dtype), View(nullptr, 0, dtype))->Wait();
    comm_->ReduceScatter(View(nullptr, 0, dtype), View(nullptr, 0, dtype), ReduceOp::kMax)->Wait();
  }
}

TEST_F(NcclGpu, ManyOutstandingOpsCompleteInOrder) {
  constexpr int kOps = 64;
  const size_t n = 4099;
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;
  std::vector<WorkPtr> works;
  for (int k = 0; k < kOps; ++k) {
    bufs.push_back(std::make_unique<DeviceBuffer>(n * 4));
    bufs.back()->Upload(Inputs(DType::kFloat32, n, k));
    works.push_back(
        comm_->AllReduce(View(bufs.back()->data(), n, DType::kFloat32), ReduceOp::kSum));
  }
  for (int k = kOps - 1; k >= 0; --k) works[k]->Wait();
  for (int k = 0; k < kOps; ++k) {
    EXPECT_TRUE(works[k]->IsSuccess());
    ExpectReduced(DType::kFloat32, ReduceOp::kSum, bufs[k]->Download(0, n * 4), n, k,
                  "op " + std::to_string(k));
  }
}

TEST_F(NcclGpu, DestructorFinishesOutstandingWork) {
  const size_t n = size_t{4} << 20;
  DeviceBuffer a(n * 4);
  a.Upload(Inputs(DType::kFloat32, n, 3));
  auto work = comm_->AllReduce(View(a.data(), n, DType::kFloat32), ReduceOp::kSum);
  comm_.reset();
  EXPECT_TRUE(work->IsCompleted());
  work->Wait();
  ExpectReduced(DType::kFloat32, ReduceOp::kSum, a.Download(0, n * 4), n, 3, "allreduce");
}

TEST_F(NcclGpu, RejectsTensorsItCannotMove) {
  std::vector<float> host(16);
  // Host memory labelled as CUDA.
  try {
    comm_->AllReduce(View(host.data(), host.size(), DType::kFloat32), ReduceOp::kSum);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(Contains(e.what(), "host")) << e.what();
  }
  // Another device index than the communicator's.
  DeviceBuffer a(64);
  TensorView other(a.data(), 16, DType::kFloat32, Device{DeviceType::kCUDA, device_ + 1});
  EXPECT_THROW(comm_->AllReduce(other, ReduceOp::kSum), InvalidArgument);
  // A CPU tensor (the base class's check).
  EXPECT_THROW(comm_->AllReduce(ViewOf(host.data(), host.size(), DType::kFloat32), ReduceOp::kSum),
               InvalidArgument);
  // With one rank there is no peer to send to.
  EXPECT_THROW(comm_->Send(View(a.data(), 16, DType::kFloat32), 0), InvalidArgument);
  EXPECT_FALSE(comm_->IsBroken());
}

// Holds the legacy default stream in a host function: every NCCL operation waits for it on the
// GPU, so it cannot finish, and no NCCL kernel is left stuck to clean up afterwards. The hold ends
// on Release() or after max_hold at the latest, in case the abort under test itself waits for the
// device.
class StreamHold {
 public:
  StreamHold(int device, std::chrono::milliseconds max_hold) {
    COHORT_CHECK_CUDA(cudaSetDevice(device));
    COHORT_CHECK_CUDA(cudaLaunchHostFunc(cudaStreamLegacy, &StreamHold::Block, &released_));
    timer_ = std::thread([this, max_hold] {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, max_hold, [this] { return released_.load(); });
      released_.store(true);
    });
  }
  ~StreamHold() {
    Release();
    timer_.join();
    (void)cudaStreamSynchronize(cudaStreamLegacy);
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_.store(true);
    }
    cv_.notify_all();
  }

 private:
  static void Block(void* flag) {
    while (!static_cast<std::atomic<bool>*>(flag)->load()) std::this_thread::sleep_for(1ms);
  }
  std::atomic<bool> released_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread timer_;
};

TEST_F(NcclGpu, WaitTimeoutNamesTheOpAndBreaksTheCommunicator) {
  StreamHold hold(device_, 3s);
  // Zero elements: only ordering, so the abort leaves no NCCL kernel behind.
  auto work = comm_->AllReduce(View(nullptr, 0, DType::kFloat32), ReduceOp::kSum);
  try {
    work->Wait(300ms);
    FAIL() << "no timeout";
  } catch (const Timeout& e) {
    EXPECT_TRUE(Contains(e.what(), "allreduce #1")) << e.what();
    EXPECT_TRUE(Contains(e.what(), "timed out")) << e.what();
  }
  EXPECT_TRUE(comm_->IsBroken());
  EXPECT_THROW(comm_->Barrier()->Wait(), PeerFailure);
  hold.Release();
}

TEST_F(NcclGpu, WatchdogTimesOutAnUnwaitedOp) {
  StreamHold hold(device_, 3s);
  OpOptions opts;
  opts.timeout = 200ms;
  auto work = comm_->AllReduce(View(nullptr, 0, DType::kFloat32), ReduceOp::kSum, opts);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!work->IsCompleted() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(work->IsCompleted()) << "the progress thread did not time the op out";
  EXPECT_THROW(work->Wait(), Timeout);
  EXPECT_TRUE(comm_->IsBroken());
  hold.Release();
}

}  // namespace
}  // namespace cohort::testing
