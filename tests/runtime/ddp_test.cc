// DDP equivalence between real processes: Gloo workers started directly with the env contract,
// MPI workers under mpirun, both meeting at a gRPC store hosted here. ddp_worker checks the
// numbers (DDP vs one process on the union of the batches; ranks identical); this test checks
// that every rank reported success and what it reported.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <regex>

#include "collectives/config.h"
#include "collectives/store/grpc_store_server.h"
#include "tests/util/subprocess.h"
#include "tests/util/world.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kToken[] = "ddp-test-token";

struct Case {
  std::string name;
  std::string backend;  // gloo or mpi
  int world;
  std::vector<std::string> args;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

class DdpEquivalence : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    server_ = std::make_unique<collectives::GrpcStoreServer>("127.0.0.1", 0, kToken);
    server_->Start();
  }

  std::map<std::string, std::string> Env(const Case& c) const {
    return {{"COHORT_STORE", fmt::format("127.0.0.1:{}", server_->Port())},
            {"COHORT_TOKEN", kToken},
            {"COHORT_STORE_TIMEOUT", "30"},
            {"COHORT_TIMEOUT", "60"},
            {"COHORT_BACKEND", c.backend},
            {"COHORT_RUN_ID", "ddp-" + c.name},
            {"COHORT_LOG_LEVEL", "warn"},
            {"OPENBLAS_NUM_THREADS", "1"},
            {"OMP_NUM_THREADS", "1"}};
  }

  // Every rank's output, one entry per rank (MPI: one entry holding all ranks).
  std::vector<ProcessResult> Run(const Case& c) {
    std::vector<std::string> worker = {BinPath("ddp_worker")};
    worker.insert(worker.end(), c.args.begin(), c.args.end());
    return RunWorld(c.backend, c.world, worker, Env(c), 120s);
  }

  std::unique_ptr<collectives::GrpcStoreServer> server_;
};

TEST_P(DdpEquivalence, MatchesOneProcessOnTheUnionOfBatches) {
  const Case& c = GetParam();
#if !COHORT_HAVE_MPI
  if (c.backend == "mpi") GTEST_SKIP() << "built without MPI (COHORT_WITH_MPI=OFF)";
#endif
  auto results = Run(c);
  std::string all;
  for (const auto& r : results) {
    all += r.output;
    EXPECT_FALSE(r.timed_out) << r.output;
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  // One RESULT line per rank, each naming the backend that ran (the worker checks the numbers
  // against --tol itself and exits 1 when one is off).
  std::regex line("RESULT rank=(\\d+) world=(\\d+) backend=(\\w+) ");
  int lines = 0;
  for (std::sregex_iterator it(all.begin(), all.end(), line), end; it != end; ++it) {
    ++lines;
    EXPECT_EQ(std::stoi((*it)[2]), c.world);
    EXPECT_EQ((*it)[3].str(), c.backend);
  }
  EXPECT_EQ(lines, c.world) << all;
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const std::string backend : {"gloo", "mpi"}) {
    for (int world : {1, 2, 3, 4}) {
      cases.push_back({fmt::format("{}_world{}_plain", backend, world), backend, world, {}});
    }
  }
  // One bucket per tensor (10 tensors) and everything in one bucket give the same result.
  cases.push_back({"gloo_world3_tiny_buckets",
                   "gloo",
                   3,
                   {"--bucket-bytes", "1", "--first-bucket-bytes", "1", "--expect-buckets", "10"}});
  cases.push_back({"gloo_world3_one_bucket",
                   "gloo",
                   3,
                   {"--bucket-bytes", "1000000000", "--first-bucket-bytes", "1000000000",
                    "--expect-buckets", "1"}});
  cases.push_back({"mpi_world2_tiny_buckets",
                   "mpi",
                   2,
                   {"--bucket-bytes", "1", "--first-bucket-bytes", "1", "--expect-buckets", "10"}});
  // Gradient accumulation: 3 micro-batches under NoSync equal one step on the larger batch.
  cases.push_back({"gloo_world3_accumulate", "gloo", 3, {"--micro", "3"}});
  cases.push_back({"mpi_world2_accumulate", "mpi", 2, {"--micro", "3"}});
  // A head used on some ranks some steps, and a layer used by nobody: no hang, same result.
  cases.push_back({"gloo_world3_unused", "gloo", 3, {"--mode", "unused"}});
  cases.push_back({"gloo_world3_unused_find", "gloo", 3, {"--mode", "unused", "--find-unused"}});
  cases.push_back({"gloo_world1_unused_find", "gloo", 1, {"--mode", "unused", "--find-unused"}});
  cases.push_back({"mpi_world3_unused_find", "mpi", 3, {"--mode", "unused", "--find-unused"}});
  // Compressed buckets: close to the reference (fp16/bf16 rounding), ranks still identical.
  cases.push_back({"gloo_world2_fp16", "gloo", 2, {"--compression", "fp16", "--tol", "2e-3"}});
  cases.push_back({"gloo_world3_bf16", "gloo", 3, {"--compression", "bf16", "--tol", "2e-2"}});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Ddp, DdpEquivalence, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace cohort::testing
