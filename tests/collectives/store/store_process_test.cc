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

extern char** environ;

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using testing::Clock;
using ::testing::HasSubstr;
using testing::MillisSince;
using testing::ThrownMessage;

const std::string kCohort = std::string(COHORT_BIN_DIR) + "/cohort";

// A child process whose stdout (and, merged, stderr) the test reads line by line.
class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, args[0].c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) throw std::runtime_error("posix_spawn " + args[0] + " failed: " + strerror(rc));
  }

  ~ChildProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }

  // The next line of output, or nullopt at end of output or after timeout.
  std::optional<std::string> ReadLine(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof(chunk));
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, n);
    }
  }

  // Reads lines until one contains text; returns it (nullopt on timeout or end of output).
  std::optional<std::string> AwaitLine(const std::string& text, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto line = ReadLine(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
      if (!line) return std::nullopt;
      all_ += *line + "\n";
      if (line->find(text) != std::string::npos) return line;
    }
    return std::nullopt;
  }

  // All output read so far plus whatever arrives within timeout, until the end of output.
  std::string Drain(milliseconds timeout) {
    while (auto line = ReadLine(timeout)) all_ += *line + "\n";
    return all_ + buffer_;
  }

  void Signal(int sig) { ::kill(pid_, sig); }

  // The wait status once the child exits, or nullopt if it is still running after timeout.
  std::optional<int> Wait(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    do {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
      }
      std::this_thread::sleep_for(milliseconds(10));
    } while (Clock::now() < deadline);
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
  std::string all_;
};

TEST(StoreProcessTest, HelpIsClear) {
  ChildProcess top({kCohort, "--help"});
  const std::string help = top.Drain(milliseconds(5000));
  EXPECT_EQ(top.Wait(milliseconds(5000)), 0) << help;
  EXPECT_THAT(help, HasSubstr("store"));
  EXPECT_THAT(help, HasSubstr("Run a standalone rendezvous store"));

  ChildProcess store({kCohort, "store", "--help"});
  const std::string store_help = store.Drain(milliseconds(5000));
  EXPECT_EQ(store.Wait(milliseconds(5000)), 0) << store_help;
  for (const char* text :
       {"--port", "--host", "--token", "COHORT_TOKEN", "COHORT_STORE", "29500", "SIGTERM"}) {
    EXPECT_THAT(store_help, HasSubstr(text));
  }

  ChildProcess none({kCohort});
  const std::string none_out = none.Drain(milliseconds(5000));
  auto status = none.Wait(milliseconds(5000));
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(WEXITSTATUS(*status), 0) << "no subcommand must fail";
  EXPECT_THAT(none_out, HasSubstr("subcommand"));
}

TEST(StoreProcessTest, BadPortIsAOneLineError) {
  ChildProcess bad({kCohort, "store", "--port", "99999"});
  const std::string out = bad.Drain(milliseconds(5000));
  auto status = bad.Wait(milliseconds(5000));
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(WEXITSTATUS(*status), 0);
  EXPECT_THAT(out, HasSubstr("--port"));
}

// 3 client threads rendezvous through a `cohort store` process, then the store is killed.
TEST(StoreProcessTest, RendezvousThroughCohortStoreThenKillIt) {
  const int port = net::FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  ChildProcess store(
      {kCohort, "store", "--port", std::to_string(port), "--host", "127.0.0.1", "--token", "T0k"});
  auto line = store.AwaitLine("cohort store listening on", milliseconds(10000));
  ASSERT_TRUE(line.has_value()) << store.Drain(milliseconds(100));
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
  store.Signal(SIGKILL);
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_LT(MillisSince(killed), 5000);
  EXPECT_THAT(waiting.get(), HasSubstr("lost the store at " + address));
  const auto after = Clock::now();
  ThrownMessage<Unavailable>([&] { waiter.Set("k", "v"); });
  EXPECT_LT(MillisSince(after), 5000);
}

TEST(StoreProcessTest, SigtermStopsTheStoreCleanly) {
  ChildProcess store({kCohort, "store", "--port", "0", "--host", "127.0.0.1", "--token", "t"});
  auto line = store.AwaitLine("cohort store listening on", milliseconds(10000));
  ASSERT_TRUE(line.has_value()) << store.Drain(milliseconds(100));
  // --port 0: the line names the port it picked.
  const auto at = line->find("127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << *line;
  const int port = std::stoi(line->substr(at + 10));
  EXPECT_GT(port, 0);
  GrpcStoreClient c("127.0.0.1:" + std::to_string(port), "t", milliseconds(5000));
  c.Set("k", "v");
  EXPECT_EQ(c.Get("k", milliseconds(0)), "v");

  store.Signal(SIGTERM);
  auto status = store.Wait(milliseconds(5000));
  ASSERT_TRUE(status.has_value()) << "cohort store ignored SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

TEST(StoreProcessTest, TokenComesFromTheEnvironment) {
  testing::ScopedEnv env({{"COHORT_TOKEN", "from-env"}});
  ChildProcess store({kCohort, "store", "--port", "0", "--host", "127.0.0.1"});
  auto line = store.AwaitLine("cohort store listening on", milliseconds(10000));
  ASSERT_TRUE(line.has_value()) << store.Drain(milliseconds(100));
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
