// Real processes: the `cohort store` binary as a child process, clients against it, and what
// clients see when it dies. CTest label: multiproc.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <optional>
#include <thread>

#include "collectives/store/grpc_store_client.h"
#include "common/error.h"
#include "common/net.h"
#include "tests/collectives/store/store_test_util.h"
#include "tests/util/subprocess.h"

extern char** environ;

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using testing::Clock;
using ::testing::HasSubstr;
using testing::MillisSince;
using testing::ThrownMessage;

const std::string kCohort = cohort::testing::BinPath("cohort");

using cohort::testing::ProcessResult;
using cohort::testing::Subprocess;

constexpr auto kFiveSeconds = std::chrono::seconds(5);

TEST(StoreProcessTest, HelpIsClear) {
  Subprocess top({kCohort, "--help"}, {});
  const ProcessResult top_result = top.Wait(kFiveSeconds);
  const std::string& help = top_result.output;
  EXPECT_EQ(top_result.exit_code, 0) << help;
  EXPECT_THAT(help, HasSubstr("store"));
  EXPECT_THAT(help, HasSubstr("Run a standalone rendezvous store"));

  Subprocess store({kCohort, "store", "--help"}, {});
  const ProcessResult store_result = store.Wait(kFiveSeconds);
  const std::string& store_help = store_result.output;
  EXPECT_EQ(store_result.exit_code, 0) << store_help;
  for (const char* text :
       {"--port", "--host", "--token", "COHORT_TOKEN", "COHORT_STORE", "29500", "SIGTERM"}) {
    EXPECT_THAT(store_help, HasSubstr(text));
  }

  Subprocess none({kCohort}, {});
  const ProcessResult none_result = none.Wait(kFiveSeconds);
  ASSERT_FALSE(none_result.timed_out);
  EXPECT_NE(none_result.exit_code, 0) << "no subcommand must fail";
  EXPECT_THAT(none_result.output, HasSubstr("subcommand"));
}

TEST(StoreProcessTest, BadPortIsAOneLineError) {
  Subprocess bad({kCohort, "store", "--port", "99999"}, {});
  const ProcessResult result = bad.Wait(kFiveSeconds);
  ASSERT_FALSE(result.timed_out);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.output, HasSubstr("--port"));
}

// 3 client threads rendezvous through a `cohort store` process, then the store is killed.
TEST(StoreProcessTest, RendezvousThroughCohortStoreThenKillIt) {
  const int port = net::FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  Subprocess store(
      {kCohort, "store", "--port", std::to_string(port), "--host", "127.0.0.1", "--token", "T0k"},
      {});
  auto line = store.AwaitLine("cohort store listening on", milliseconds(10000));
  ASSERT_TRUE(line.has_value()) << store.Output();
  EXPECT_THAT(*line, HasSubstr(address));

  constexpr int kWorld = 3;
  std::vector<std::future<std::vector<std::string>>> ranks;
  for (int r = 0; r < kWorld; ++r) {
    ranks.push_back(std::async(std::launch::async, [&, r] {
      GrpcStoreClient c(address, "T0k", milliseconds(5000));
      c.Set("addr/" + std::to_string(r), "host" + std::to_string(r));
      if (c.Add("arrived", 1) == kWorld) c.Set("all-arrived", "1");
      c.Get("all-arrived", milliseconds(5000));
      std::vector<std::string> peers;
      for (auto& [key, value] : c.List("addr/")) peers.push_back(key + "=" + value);
      return peers;
    }));
  }
  for (auto& rank : ranks) {
    ASSERT_EQ(rank.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_THAT(rank.get(), ::testing::ElementsAre("addr/0=host0", "addr/1=host1", "addr/2=host2"));
  }

  GrpcStoreClient wrong(address, "other", milliseconds(5000));
  ThrownMessage<Unauthenticated>([&] { wrong.Get("arrived", milliseconds(0)); });

  // A rank waiting when the store dies gets Unavailable, not a hang.
  GrpcStoreClient waiter(address, "T0k", milliseconds(5000));
  EXPECT_EQ(waiter.Get("arrived", milliseconds(0)), "3");
  auto waiting = std::async(std::launch::async, [&] {
    return ThrownMessage<Unavailable>([&] { waiter.Wait({"never"}, milliseconds(30000)); });
  });
  std::this_thread::sleep_for(milliseconds(200));
  const auto killed = Clock::now();
  store.Kill(SIGKILL);
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_LT(MillisSince(killed), 5000);
  EXPECT_THAT(waiting.get(), HasSubstr("lost the store at " + address));
  const auto after = Clock::now();
  ThrownMessage<Unavailable>([&] { waiter.Set("k", "v"); });
  EXPECT_LT(MillisSince(after), 5000);
}

TEST(StoreProcessTest, SigtermStopsTheStoreCleanly) {
  Subprocess store({kCohort, "store", "--port", "0", "--host", "127.0.0.1", "--token", "t"}, {});
  auto line = store.AwaitLine("cohort store listening on", milliseconds(10000));
  ASSERT_TRUE(line.has_value()) << store.Output();
  // --port 0: the line names the port it picked.
  const auto at = line->find("127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << *line;
  const int port = std::stoi(line->substr(at + 10));
  EXPECT_GT(port, 0);
  GrpcStoreClient c("127.0.0.1:" + std::to_string(port), "t", milliseconds(5000));
  c.Set("k", "v");
  EXPECT_EQ(c.Get("k", milliseconds(0)), "v");

  store.Kill(SIGTERM);
  const ProcessResult result = store.Wait(kFiveSeconds);
  ASSERT_FALSE(result.timed_out) << "cohort store ignored SIGTERM";
  EXPECT_EQ(result.signal, 0) << result.output;
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST(StoreProcessTest, TokenComesFromTheEnvironment) {
  testing::ScopedEnv env({{"COHORT_TOKEN", "from-env"}});
  Subprocess store({kCohort, "store", "--port", "0", "--host", "127.0.0.1"}, {});
  auto line = store.AwaitLine("cohort store listening on", milliseconds(10000));
  ASSERT_TRUE(line.has_value()) << store.Output();
  EXPECT_THAT(*line, HasSubstr("token required"));
  const int port = std::stoi(line->substr(line->find("127.0.0.1:") + 10));
  const std::string address = "127.0.0.1:" + std::to_string(port);
  GrpcStoreClient good(address, "from-env", milliseconds(5000));
  good.Set("k", "v");
  GrpcStoreClient bad(address, "", milliseconds(5000));
  ThrownMessage<Unauthenticated>([&] { bad.Set("k", "v"); });
}

}  // namespace
}  // namespace cohort::collectives
