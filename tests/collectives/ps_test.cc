// The ps backend between real processes on 127.0.0.1: `cohort ps-server` shards and
// collective_worker ranks started here, meeting at a gRPC store hosted by this test. The worker
// checks every value against expected_values.h; here we check exit codes, messages and times.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <thread>

#include "collectives/store/grpc_store_server.h"
#include "common/net.h"
#include "tests/collectives/ps_servers.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr char kToken[] = "ps-test-token";

class Ps : public ::testing::Test {
 protected:
  // The env of one run, with a store of its own (the worker's barrier check counts the keys
  // of every rank on it).
  std::map<std::string, std::string> Env(const PsServerProcs& servers) {
    stores_.push_back(std::make_unique<collectives::GrpcStoreServer>("127.0.0.1", 0, kToken));
    stores_.back()->Start();
    return {{"COHORT_STORE", fmt::format("127.0.0.1:{}", stores_.back()->Port())},
            {"COHORT_TOKEN", kToken},
            {"COHORT_PS_SERVERS", servers.List()},
            {"COHORT_RUN_ID", fmt::format("ps-test-{}", runs_++)},
            {"COHORT_STORE_TIMEOUT", "20"},
            {"COHORT_TIMEOUT", "60"},
            {"COHORT_LOG_LEVEL", "warn"},
            {"OPENBLAS_NUM_THREADS", "1"}};
  }

  // Starts world ranks of collective_worker --backend ps with args; one result per rank.
  std::vector<std::unique_ptr<Subprocess>> Start(int world, const std::vector<std::string>& args,
                                                 std::map<std::string, std::string> env) {
    std::vector<std::unique_ptr<Subprocess>> procs;
    for (int r = 0; r < world; ++r) {
      std::vector<std::string> argv = {BinPath("collective_worker"), "--backend", "ps"};
      argv.insert(argv.end(), args.begin(), args.end());
      env["COHORT_RANK"] = std::to_string(r);
      env["COHORT_WORLD_SIZE"] = std::to_string(world);
      procs.push_back(std::make_unique<Subprocess>(argv, env));
    }
    return procs;
  }

  std::vector<ProcessResult> Run(int world, const std::vector<std::string>& args,
                                 const std::map<std::string, std::string>& env,
                                 std::chrono::milliseconds timeout) {
    auto procs = Start(world, args, env);
    std::vector<ProcessResult> results;
    for (auto& p : procs) results.push_back(p->Wait(timeout));
    return results;
  }

  std::vector<std::unique_ptr<collectives::GrpcStoreServer>> stores_;
  int runs_ = 0;
};

const std::vector<std::string> kMatrixArgs = {"--mode", "matrix", "--skip",
                                              "reducescatter,sendrecv"};

// Every supported op x dtype x counts 0, 1, 7, 1031 at 1-3 servers and worlds 1-4. Partitions of
// 1000 bytes cut the larger tensors into several, spread over every server.
TEST_F(Ps, MatrixOverServersAndWorlds) {
  for (int servers = 1; servers <= 3; ++servers) {
    PsServerProcs ps(servers, kToken);
    for (int world = 1; world <= 4; ++world) {
      auto env = Env(ps);
      env["COHORT_PS_PARTITION_BYTES"] = "1000";
      auto rs = Run(world, kMatrixArgs, env, 120s);
      for (int r = 0; r < world; ++r) {
        EXPECT_EQ(rs[r].exit_code, 0)
            << servers << " servers, world " << world << ", rank " << r << ": " << rs[r].output;
        EXPECT_THAT(rs[r].output, HasSubstr(", 0 failed")) << rs[r].output;
      }
    }
  }
}

// Split on ps: groups that leave ranks out, two groups at once, a dp x tp mesh (world 4).
TEST_F(Ps, SplitAndMesh) {
  PsServerProcs ps(2, kToken);
  for (int world : {3, 4}) {
    auto env = Env(ps);
    std::vector<std::unique_ptr<Subprocess>> procs;
    for (int r = 0; r < world; ++r) {
      env["COHORT_RANK"] = std::to_string(r);
      env["COHORT_WORLD_SIZE"] = std::to_string(world);
      procs.push_back(std::make_unique<Subprocess>(
          std::vector<std::string>{BinPath("split_worker"), "--backend", "ps", "--no-p2p"}, env));
    }
    for (auto& p : procs) {
      auto r = p->Wait(60s);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      EXPECT_THAT(r.output, HasSubstr(fmt::format(" of {} (ps): groups ok", world))) << r.output;
    }
  }
}

// A large count (1 Mi + 3) of every dtype, in 512 KiB partitions (3 to 17 of them) over 3
// servers at world 2 and over 2 servers at world 3.
TEST_F(Ps, LargeTensorsOfEveryDtype) {
  for (auto [servers, world] : {std::pair{3, 2}, std::pair{2, 3}}) {
    PsServerProcs ps(servers, kToken);
    auto args = kMatrixArgs;
    args.insert(args.end(), {"--counts", std::to_string((1u << 20) + 3)});
    auto env = Env(ps);
    env["COHORT_PS_PARTITION_BYTES"] = "524288";
    auto rs = Run(world, args, env, 180s);
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(rs[r].exit_code, 0) << servers << " servers, rank " << r << ": " << rs[r].output;
      EXPECT_THAT(rs[r].output, HasSubstr(", 0 failed")) << rs[r].output;
    }
  }
}

TEST_F(Ps, SendIsRefusedInOneLine) {
  PsServerProcs ps(1, kToken);
  auto rs = Run(2, {"--mode", "send"}, Env(ps), 60s);
  for (const auto& r : rs) {
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_THAT(r.output, HasSubstr("backend ps does not support send\n")) << r.output;
  }
}

TEST_F(Ps, MismatchNamesBothRanks) {
  PsServerProcs ps(2, kToken);
  auto rs = Run(2, {"--mode", "mismatch"}, Env(ps), 60s);
  for (const auto& r : rs) {
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_THAT(r.output, HasSubstr("rank 0 called allreduce f32[7] sum but rank 1 called "
                                    "allreduce f32[9] sum"))
        << r.output;
  }
}

TEST_F(Ps, WrongTokenIsRefused) {
  PsServerProcs ps(2, kToken);
  auto env = Env(ps);
  env.erase("COHORT_STORE");  // the store would refuse it first
  env["COHORT_TOKEN"] = "not-the-token";
  auto rs = Run(1, kMatrixArgs, env, 60s);
  EXPECT_EQ(rs[0].exit_code, 3) << rs[0].output;
  EXPECT_THAT(rs[0].output, HasSubstr(fmt::format("ps server {} (shard 0 of 2) refused this "
                                                  "worker",
                                                  ps.Address(0))));
  EXPECT_THAT(rs[0].output, HasSubstr("PERMISSION_DENIED"));
  // One line: the refusal and how to fix it, nothing else.
  EXPECT_EQ(std::count(rs[0].output.begin(), rs[0].output.end(), '\n'), 1) << rs[0].output;
  EXPECT_THAT(rs[0].output, HasSubstr("give workers and servers the same COHORT_TOKEN\n"));
}

// A server SIGKILLed while the ranks all-reduce 4 MiB in 64 KiB partitions over both servers:
// every rank fails well within its timeout (60 s), naming that server and its shard.
TEST_F(Ps, KilledServerIsNamedByEveryRank) {
  PsServerProcs ps(2, kToken);
  auto env = Env(ps);
  env["COHORT_PS_PARTITION_BYTES"] = "65536";
  auto procs = Start(3, {"--mode", "hang", "--victim", "-1", "--at", "100000"}, env);
  for (auto& p : procs) ASSERT_TRUE(p->AwaitLine("completed op 2", 30s)) << p->Output();
  const auto killed = std::chrono::steady_clock::now();
  ps.Kill(1, SIGKILL);
  for (auto& p : procs) {
    auto r = p->Wait(60s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_LT(secs, 10.0) << r.output;
    EXPECT_THAT(r.output, HasSubstr(fmt::format("ps server {} (shard 1 of 2)", ps.Address(1))))
        << r.output;
  }
}

// A rank that stops calling collectives is named by the others at their timeout (3 s).
TEST_F(Ps, HungRankIsNamedAtTheTimeout) {
  PsServerProcs ps(2, kToken);
  auto env = Env(ps);
  env["COHORT_TIMEOUT"] = "3";
  auto procs = Start(2, {"--mode", "hang", "--victim", "1", "--at", "3"}, env);
  const auto start = std::chrono::steady_clock::now();
  auto r = procs[0]->Wait(30s);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  procs[1]->Kill(SIGKILL);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  // Either the wait or the gRPC deadline ends it first; both name the rank that never came.
  EXPECT_THAT(r.output, HasSubstr("ERROR [timeout] ps allreduce #3 (sum, f32[1048576] cpu) on "
                                  "rank 0, 2 ranks: "))
      << r.output;
  EXPECT_THAT(r.output, HasSubstr("; rank 1 never reached it (its last collective was #2 "
                                  "allreduce)"))
      << r.output;
  EXPECT_LT(secs, 15.0);
}

// A rank SIGKILLed in the middle of an all-reduce: the servers fail its partitions for the
// others at once (the dead rank's calls are cancelled), long before the timeout (60 s).
TEST_F(Ps, KilledRankFailsTheOthersAtOnce) {
  PsServerProcs ps(2, kToken);
  auto env = Env(ps);
  env["COHORT_PS_PARTITION_BYTES"] = "65536";
  auto procs = Start(3, {"--mode", "kill", "--victim", "1", "--at", "3"}, env);
  for (int r : {0, 2}) {
    auto res = procs[r]->Wait(60s);
    EXPECT_EQ(res.exit_code, 3) << res.output;
    EXPECT_LT(res.seconds, 20.0) << res.output;
    // The victim dies 5 ms into #3; when its pushes of #3 had all landed by then, #3 completes
    // and the others fail in #4.
    EXPECT_THAT(res.output, ::testing::ContainsRegex("allreduce #[34] ")) << res.output;
    EXPECT_THAT(res.output, HasSubstr("rank 1")) << res.output;
  }
  EXPECT_EQ(procs[1]->Wait(10s).signal, SIGKILL);
}

// A listed server that never comes up is named when COHORT_STORE_TIMEOUT (2 s) runs out.
TEST_F(Ps, ServerNeverUpIsNamedAtTheDeadline) {
  PsServerProcs ps(1, kToken, 2);
  const std::string missing = fmt::format("127.0.0.1:{}", net::FreePort());
  auto env = Env(ps);
  env["COHORT_PS_SERVERS"] = ps.List() + "," + missing;
  env["COHORT_STORE_TIMEOUT"] = "2";
  const auto start = std::chrono::steady_clock::now();
  auto rs = Run(2, kMatrixArgs, env, 60s);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const auto& r : rs) {
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_THAT(r.output, HasSubstr(fmt::format("ps server {} (shard 1 of 2) did not come up "
                                                "within 2.0 s",
                                                missing)))
        << r.output;
  }
  EXPECT_LT(secs, 15.0);
}

}  // namespace
}  // namespace cohort::testing
