// Tensor-parallel equivalence between real processes: Gloo workers started directly with the env
// contract, MPI workers under mpirun, meeting at a gRPC store hosted here. tp_worker checks the
// numbers (shards at init equal the unsharded weights exactly; losses and trained parameters
// equal the one-process model's within 1e-5; Megatron's collectives and bytes per step); this
// test checks that every rank reported success, and what it reported.
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

constexpr char kToken[] = "tp-test-token";

struct Case {
  std::string name;
  std::string backend;  // gloo or mpi
  int world;
  int tp;
  std::vector<std::string> args;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

class TensorParallelEquivalence : public ::testing::TestWithParam<Case> {
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
            {"COHORT_RUN_ID", "tp-" + c.name},
            {"COHORT_LOG_LEVEL", "warn"},
            {"OPENBLAS_NUM_THREADS", "1"},
            {"OMP_NUM_THREADS", "1"}};
  }

  // Every rank's output, one entry per rank (MPI: one entry holding all ranks).
  std::vector<ProcessResult> Run(const Case& c) {
    std::vector<std::string> worker = {BinPath("tp_worker"), "--tp", std::to_string(c.tp)};
    worker.insert(worker.end(), c.args.begin(), c.args.end());
    return RunWorld(c.backend, c.world, worker, Env(c), 90s);
  }

  std::unique_ptr<collectives::GrpcStoreServer> server_;
};

TEST_P(TensorParallelEquivalence, MatchesOneProcess) {
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
  // One RESULT line per rank (the worker checks the numbers itself and exits 1 when one is off);
  // the shards at init must be exact.
  std::regex line(
      "RESULT rank=(\\d+) world=(\\d+) tp=(\\d+) backend=(\\w+) mode=\\w+ "
      "init_diff=(\\S+) ");
  int lines = 0;
  for (std::sregex_iterator it(all.begin(), all.end(), line), end; it != end; ++it) {
    ++lines;
    EXPECT_EQ(std::stoi((*it)[2]), c.world);
    EXPECT_EQ(std::stoi((*it)[3]), c.tp);
    EXPECT_EQ((*it)[4].str(), c.backend);
    EXPECT_EQ((*it)[5].str(), "0");
  }
  EXPECT_EQ(lines, c.world) << all;
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (int tp : {2, 3}) {
    for (const std::string mode : {"parallel", "gathered"}) {
      cases.push_back({fmt::format("gloo_tp{}_{}", tp, mode), "gloo", tp, tp, {"--mode", mode}});
    }
  }
  cases.push_back({"gloo_tp1_parallel", "gloo", 1, 1, {}});
  cases.push_back({"gloo_tp2_no_bias", "gloo", 2, 2, {"--no-bias"}});
  cases.push_back({"mpi_tp2_parallel", "mpi", 2, 2, {}});
  // Two tp groups of two (Split of the world of 4) training side by side.
  cases.push_back({"gloo_world4_tp2", "gloo", 4, 2, {}});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(TensorParallel, TensorParallelEquivalence, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace cohort::testing
