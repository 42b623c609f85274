// COHORT_BACKEND=auto with parameter servers: when gloo cannot start on one rank (its
// COHORT_GLOO_HOST is an address no interface here has, so its bind fails after it joined the
// rendezvous), every rank falls back to ps together, well before the store timeout, and the
// collectives matrix passes on ps; with gloo fine everywhere every rank stays on gloo; without
// servers the original error stands. Real `cohort ps-server` processes, collective_worker ranks
// and a gRPC store over 127.0.0.1.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "collectives/store/grpc_store_server.h"
#include "tests/collectives/ps_servers.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "ps-fallback-token";
constexpr char kNoSuchAddress[] = "203.0.113.7";  // TEST-NET-3: on no interface here

class PsFallback : public ::testing::Test {
 protected:
  // Runs world ranks of collective_worker --backend auto (the matrix without the ops ps lacks);
  // rank `bad` (or none: -1) gets COHORT_GLOO_HOST=kNoSuchAddress.
  std::vector<ProcessResult> RunAuto(int world, int bad, const std::string& servers,
                                     const std::string& store_timeout = "20") {
    collectives::GrpcStoreServer store("127.0.0.1", 0, kToken);
    store.Start();
    std::map<std::string, std::string> env = {
        {"COHORT_STORE", fmt::format("127.0.0.1:{}", store.Port())},
        {"COHORT_TOKEN", kToken},
        {"COHORT_PS_SERVERS", servers},
        {"COHORT_PS_PARTITION_BYTES", "1000"},
        {"COHORT_RUN_ID", "ps-fallback"},
        {"COHORT_STORE_TIMEOUT", store_timeout},  // the fallback must not wait for it
        {"COHORT_TIMEOUT", "60"},
        {"COHORT_LOG_LEVEL", "warn"}};
    std::vector<std::unique_ptr<Subprocess>> procs;
    for (int r = 0; r < world; ++r) {
      env["COHORT_RANK"] = std::to_string(r);
      env["COHORT_WORLD_SIZE"] = std::to_string(world);
      if (r == bad) {
        env["COHORT_GLOO_HOST"] = kNoSuchAddress;
      } else {
        env.erase("COHORT_GLOO_HOST");
      }
      procs.push_back(std::make_unique<Subprocess>(
          std::vector<std::string>{BinPath("collective_worker"), "--backend", "auto", "--mode",
                                   "matrix", "--skip", "reducescatter,sendrecv", "--counts",
                                   "0,1,7,1031"},
          env));
    }
    std::vector<ProcessResult> results;
    for (auto& p : procs) results.push_back(p->Wait(120s));
    return results;
  }
};

TEST_F(PsFallback, GlooFailingOnOneRankMovesEveryRankToPs) {
  PsServerProcs ps(2, kToken);
  const auto start = std::chrono::steady_clock::now();
  auto rs = RunAuto(3, 1, ps.List());
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(rs[r].exit_code, 0) << "rank " << r << ": " << rs[r].output;
    EXPECT_THAT(rs[r].output, HasSubstr(fmt::format("rank {} of 3 (ps): ", r))) << rs[r].output;
    EXPECT_THAT(rs[r].output, HasSubstr(" checks, 0 failed")) << rs[r].output;
    // One line, the same on every rank: the backend, the rank that could not start it and why.
    EXPECT_THAT(rs[r].output,
                HasSubstr(fmt::format("backend auto: gloo could not start (rank 1: gloo: rank 1 "
                                      "could not connect to its peers over TCP on {} (",
                                      kNoSuchAddress)))
        << rs[r].output;
    EXPECT_THAT(rs[r].output, HasSubstr("); every rank falls back to ps\n")) << rs[r].output;
  }
  // The ranks waiting for rank 1's address heard of its failure through the store at once,
  // not at COHORT_STORE_TIMEOUT (20 s).
  EXPECT_LT(secs, 15.0);
}

TEST_F(PsFallback, EveryRankStaysOnGlooWhenItStarts) {
  PsServerProcs ps(1, kToken);
  auto rs = RunAuto(2, -1, ps.List());
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(rs[r].exit_code, 0) << rs[r].output;
    EXPECT_THAT(rs[r].output, HasSubstr(fmt::format("rank {} of 2 (gloo): ", r))) << rs[r].output;
    EXPECT_THAT(rs[r].output, HasSubstr(" checks, 0 failed")) << rs[r].output;
    EXPECT_THAT(rs[r].output, Not(HasSubstr("falls back"))) << rs[r].output;
  }
}

// Without servers nothing to fall back to: the failing rank's error is gloo's own.
TEST_F(PsFallback, WithoutServersTheOriginalErrorStands) {
  auto rs = RunAuto(2, 1, "", "3");
  EXPECT_EQ(rs[1].exit_code, 3) << rs[1].output;
  EXPECT_THAT(rs[1].output, HasSubstr(fmt::format("gloo: failed to start: gloo: rank 1 could not "
                                                  "connect to its peers over TCP on {}",
                                                  kNoSuchAddress)))
      << rs[1].output;
  // Rank 0 waited for rank 1's address until COHORT_STORE_TIMEOUT.
  EXPECT_EQ(rs[0].exit_code, 3) << rs[0].output;
  for (const auto& r : rs) EXPECT_THAT(r.output, Not(HasSubstr("falls back"))) << r.output;
}

}  // namespace
}  // namespace cohort::testing
