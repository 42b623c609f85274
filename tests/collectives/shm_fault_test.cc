// ShmCollectives with ranks as real processes (fork, a real store server hosted by rank 0): a
// rank SIGKILLed in the middle of a stream of collectives is named by every other rank, by rank
// and pid, within a fraction of a second, for every collective and both all-reduce paths.
// (The parent never starts gRPC or threads, so forking it stays safe; the children end with
// _exit and never return into the test framework.)
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "collectives/shm/shm_collectives.h"
#include "collectives/store/store_from_env.h"
#include "common/net.h"

namespace cohort::testing {
namespace {

using namespace collectives;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct Case {
  const char* name;
  OpType type;
  size_t count;  // floats per rank's contribution
};

// Runs case c over and over until it fails; reports "created" once the group exists, then
// "<nanos> <message>" when a collective throws.
[[noreturn]] void RunRank(int rank, int size, int port, const Case& c, int report) {
  auto say = [&](const std::string& s) {
    const std::string line = s + "\n";
    if (write(report, line.data(), line.size()) < 0) _exit(2);
  };
  try {
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    setenv("COHORT_RANK", std::to_string(rank).c_str(), 1);
    setenv("WORLD_SIZE", std::to_string(size).c_str(), 1);
    auto store = ConnectStoreFromEnv();
    std::string why;
    auto shm = ShmCollectives::Create(*store, "fault", rank, size, 20s, &why);
    if (!shm) throw std::runtime_error("no shared memory: " + why);
    say("created");
    std::vector<float> in(size * c.count, 1.0f), out(size * c.count);
    for (;;) {
      switch (c.type) {
        case OpType::kAllReduce:
          shm->AllReduce(in.data(), out.data(), c.count, DType::kFloat32, ReduceOp::kSum, 20s);
          break;
        case OpType::kBroadcast:
          shm->Broadcast(in.data(), c.count, DType::kFloat32, 0, 20s);
          break;
        case OpType::kAllGather:
          shm->AllGather(in.data(), out.data(), c.count, DType::kFloat32, 20s);
          break;
        default:
          shm->ReduceScatter(in.data(), out.data(), c.count, DType::kFloat32, ReduceOp::kSum, 20s);
      }
    }
  } catch (const std::exception& e) {
    say(fmt::format("{} {}", NowNanos(), e.what()));
  }
  // Rank 0 hosts the store: it stays until the parent has read every report.
  if (rank == 0) pause();
  _exit(0);
}

// Reads one line from fd, waiting up to timeout; "" on timeout or end of file.
std::string ReadLine(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = Clock::now() + timeout;
  char ch;
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (poll(&p, 1, std::max(left, 1)) <= 0) continue;
    if (read(fd, &ch, 1) != 1) return line;
    if (ch == '\n') return line;
    line += ch;
  }
  return line;
}

class ShmFault : public ::testing::TestWithParam<Case> {};

TEST_P(ShmFault, ARankKilledMidStreamIsNamedByEveryOtherRankWithinAFractionOfASecond) {
  const Case c = GetParam();
  constexpr int kSize = 3, kVictim = 1;
  const int port = net::FreePort();
  std::vector<pid_t> pids(kSize);
  std::vector<int> reports(kSize);
  for (int r = 0; r < kSize; ++r) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunRank(r, kSize, port, c, fds[1]);
    }
    close(fds[1]);
    pids[r] = pid;
    reports[r] = fds[0];
  }
  for (int r = 0; r < kSize; ++r) ASSERT_EQ(ReadLine(reports[r], 30s), "created") << "rank " << r;
  std::this_thread::sleep_for(200ms);  // every rank is in the stream of collectives by now
  const int64_t killed_at = NowNanos();
  kill(pids[kVictim], SIGKILL);
  for (int r = 0; r < kSize; ++r) {
    if (r == kVictim) continue;
    const std::string line = ReadLine(reports[r], 10s);
    const size_t sp = line.find(' ');
    ASSERT_NE(sp, std::string::npos) << "rank " << r << " reported nothing: '" << line << "'";
    const double ms = (std::stoll(line.substr(0, sp)) - killed_at) / 1e6;
    const std::string what = line.substr(sp + 1);
    EXPECT_NE(what.find(fmt::format("rank {} (pid {}) exited", kVictim, pids[kVictim])),
              std::string::npos)
        << what;
    // Noticed by the ~50 ms liveness check; the rest is this busy machine's scheduling.
    EXPECT_LT(ms, 400.0) << c.name << ": rank " << r << " named the dead rank after " << ms
                         << " ms";
    RecordProperty(fmt::format("rank{}_ms", r), static_cast<int>(ms));
  }
  for (int r = 0; r < kSize; ++r) {
    kill(pids[r], SIGKILL);
    waitpid(pids[r], nullptr, 0);
    close(reports[r]);
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, ShmFault,
                         ::testing::Values(Case{"small_allreduce", OpType::kAllReduce, 7},
                                           Case{"large_allreduce", OpType::kAllReduce, 1 << 20},
                                           Case{"broadcast", OpType::kBroadcast, 100003},
                                           Case{"allgather", OpType::kAllGather, 100003},
                                           Case{"reducescatter", OpType::kReduceScatter, 100003}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace cohort::testing
