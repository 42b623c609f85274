// The hierarchical collectives (collectives/hier/) with ranks as real processes on this machine
// (fork; a real store server hosted by rank 0), grouped into "hosts" by COHORT_HIER_HOST: 2 hosts
// x 2 ranks, 2 x 3 and 2 + 1. Shared memory inside each host, Gloo TCP over 127.0.0.1 between the
// leaders. All-reduce and reduce-scatter (every op), broadcast (every root) and all-gather (in
// and out of place), for every dtype and counts 0, 1, 7, 1031 and a prime past one 8 MiB piece
// in 8-byte dtypes: every rank's values (exact small integers, expected_values.h) and, except
// for reduce-scatter (each rank holds its own slice), a hash of its result's bytes, which must
// be the same on every rank (bitwise equal).
// (The parent never starts threads or gRPC, so forking it stays safe; the children end with
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
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/hier/hier_collectives.h"
#include "collectives/store/store_from_env.h"
#include "common/net.h"
#include "tests/collectives/expected_values.h"

namespace cohort::testing {
namespace {

using namespace collectives;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// InputValue(dtype, r, i, k) depends on i only through i % 9: inputs and expected results are
// computed for 9 elements and repeated (the check of a million elements costs a lookup each).
constexpr size_t kPeriod = 9;
constexpr size_t kPrime = 1048583;  // f64/i64: 8 MiB + 56 B, two of HierCollectives's pieces
const std::vector<size_t> kCounts = {0, 1, 7, 1031, kPrime};
const std::vector<DType> kDTypes = {DType::kFloat32,  DType::kFloat64, DType::kFloat16,
                                    DType::kBFloat16, DType::kInt32,   DType::kInt64,
                                    DType::kUInt8};
const std::vector<ReduceOp> kOps = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax,
                                    ReduceOp::kProduct};

// A hash of a result's bytes, 8 at a time (FNV-1a's step over words; the tail byte by byte).
uint64_t HashBytes(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  size_t i = 0;
  for (uint64_t w; i + 8 <= n; i += 8) {
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < n; ++i) h = (h ^ static_cast<uint8_t>(p[i])) * 0x100000001b3ull;
  return h;
}

// The cases every rank runs, in order: all-reduce (each op), broadcast (each root) and
// all-gather, for each count and dtype. Each says "<case> <wrong values> <hash of the result>".
class Cases {
 public:
  Cases(HierCollectives& hier, int rank, int size, const std::function<void(std::string)>& say)
      : hier_(hier), rank_(rank), size_(size), say_(say) {}

  void AllReduce(size_t n, DType dtype, ReduceOp op) {
    std::vector<char> in = Inputs(n, dtype, rank_), out(in.size());
    char* dst = k_ % 2 ? out.data() : in.data();  // in place and out of place, alternating
    hier_.AllReduce(in.data(), dst, n, dtype, op, 20s);
    double want[kPeriod];
    for (size_t j = 0; j < kPeriod; ++j) want[j] = Expected(dtype, op, size_, j, k_);
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i) {
      wrong += !Close(dtype, op, Load(dtype, dst, i), want[i % kPeriod]);
    }
    Say(fmt::format("all-reduce/{}", ReduceOpName(op)), n, dtype, wrong, dst, n);
  }

  void Broadcast(size_t n, DType dtype, int root) {
    std::vector<char> buf = Inputs(n, dtype, rank_);
    hier_.Broadcast(buf.data(), n, dtype, root, 20s);
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i) {
      wrong += Load(dtype, buf.data(), i) != InputValue(dtype, root, i % kPeriod, k_);
    }
    Say(fmt::format("broadcast/root{}", root), n, dtype, wrong, buf.data(), n);
  }

  void AllGather(size_t n, DType dtype) {
    const size_t es = ElementSize(dtype);
    std::vector<char> in = Inputs(n, dtype, rank_), out(size_ * n * es + 1);
    const void* src = in.data();
    if (k_ % 2) {  // in place: this rank's piece of out is its input
      std::memcpy(out.data() + rank_ * n * es, in.data(), n * es);
      src = out.data() + rank_ * n * es;
    }
    hier_.AllGather(src, out.data(), n, dtype, 20s);
    size_t wrong = 0;
    for (int r = 0; r < size_; ++r) {
      for (size_t i = 0; i < n; ++i) {
        wrong += Load(dtype, out.data(), r * n + i) != InputValue(dtype, r, i % kPeriod, k_);
      }
    }
    Say("all-gather", n, dtype, wrong, out.data(), size_ * n);
  }

  // In place (out is this rank's slice of in) and out of place, alternating. Each rank's result
  // is its own slice: only the values are compared (CheckLayout skips the bits).
  void ReduceScatter(size_t n, DType dtype, ReduceOp op) {
    const size_t es = ElementSize(dtype);
    std::vector<char> in = Inputs(size_ * n, dtype, rank_), out(n * es + 1);
    char* dst = k_ % 2 ? out.data() : in.data() + rank_ * n * es;
    hier_.ReduceScatter(in.data(), dst, n, dtype, op, 20s);
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i) {
      const double want = Expected(dtype, op, size_, (rank_ * n + i) % kPeriod, k_);
      wrong += !Close(dtype, op, Load(dtype, dst, i), want);
    }
    Say(fmt::format("reduce-scatter/{}", ReduceOpName(op)), n, dtype, wrong, dst, n);
  }

 private:
  // Rank's inputs: kPeriod values, repeated (copies of copies: the period divides every length).
  std::vector<char> Inputs(size_t n, DType dtype, int rank) const {
    const size_t es = ElementSize(dtype), bytes = n * es;
    std::vector<char> v(bytes + 1);
    for (size_t i = 0; i < std::min(n, kPeriod); ++i) {
      StoreExact(dtype, v.data(), i, InputValue(dtype, rank, i, k_));
    }
    for (size_t done = kPeriod * es; done < bytes; done *= 2) {
      std::memcpy(v.data() + done, v.data(), std::min(done, bytes - done));
    }
    return v;
  }
  void Say(const std::string& what, size_t n, DType dtype, size_t wrong, const void* result,
           size_t elements) {
    say_(fmt::format("{}/{}/{} {} {:x}", what, DTypeName(dtype), n, wrong,
                     HashBytes(static_cast<const char*>(result), elements * ElementSize(dtype))));
    ++k_;
  }

  HierCollectives& hier_;
  const int rank_, size_;
  std::function<void(std::string)> say_;
  int k_ = 0;  // the operation's number: inputs differ from one to the next
};

// One rank: every case, one line each, then "done".
[[noreturn]] void RunRank(int rank, const std::vector<std::string>& hosts, int port, int report) {
  auto say = [&](const std::string& s) {
    const std::string line = s + "\n";
    if (write(report, line.data(), line.size()) < 0) _exit(2);
  };
  const int size = static_cast<int>(hosts.size());
  try {
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    setenv("COHORT_RANK", std::to_string(rank).c_str(), 1);
    setenv("WORLD_SIZE", std::to_string(size).c_str(), 1);
    setenv("COHORT_HIER_HOST", hosts[rank].c_str(), 1);
    CommConfig config = CommConfig::FromEnv(rank, size, ConnectStoreFromEnv());
    config.connect_timeout = 20s;
    std::string why;
    auto hier = HierCollectives::Create(
        config, "hier-test",
        [](const CommConfig& c) { return std::make_unique<GlooCommunicator>(c); }, &why);
    if (!hier) throw std::runtime_error("not hierarchical: " + why);
    say("created " + hier->Describe());
    Cases cases(*hier, rank, size, say);
    for (size_t n : kCounts) {
      for (DType dtype : kDTypes) {
        for (ReduceOp op : kOps) cases.AllReduce(n, dtype, op);
        for (int root = 0; root < size; ++root) cases.Broadcast(n, dtype, root);
        cases.AllGather(n, dtype);
        for (ReduceOp op : kOps) cases.ReduceScatter(n, dtype, op);
      }
    }
    say("done");
  } catch (const std::exception& e) {
    say(fmt::format("error {}", e.what()));
  }
  if (rank == 0) pause();  // hosts the store until the parent has every rank's report
  _exit(0);
}

struct Report {
  std::vector<std::string> lines;
  bool done = false;
};

// Forks one process per entry of hosts (its COHORT_HIER_HOST) and collects their reports.
std::vector<Report> RunLayout(const std::vector<std::string>& hosts) {
  const int size = static_cast<int>(hosts.size()), port = net::FreePort();
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int r = 0; r < size; ++r) {
    int p[2];
    if (pipe(p) != 0) throw std::runtime_error("pipe failed");
    const pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      RunRank(r, hosts, port, p[1]);
    }
    close(p[1]);
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  std::vector<Report> reports(size);
  std::vector<std::string> partial(size);
  const auto deadline = Clock::now() + 90s;
  for (int open = size; open > 0 && Clock::now() < deadline;) {
    std::vector<pollfd> pfds;
    for (int r = 0; r < size; ++r) {
      if (fds[r] >= 0) pfds.push_back({fds[r], POLLIN, 0});
    }
    if (poll(pfds.data(), pfds.size(), 1000) <= 0) continue;
    for (int r = 0; r < size; ++r) {
      if (fds[r] < 0) continue;
      pollfd* pf = nullptr;
      for (auto& x : pfds) pf = x.fd == fds[r] ? &x : pf;
      if (!pf || !(pf->revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      const ssize_t got = read(fds[r], buf, sizeof buf);
      if (got > 0) partial[r].append(buf, got);
      for (size_t nl; (nl = partial[r].find('\n')) != std::string::npos;) {
        const std::string line = partial[r].substr(0, nl);
        partial[r].erase(0, nl + 1);
        if (line == "done") reports[r].done = true;
        if (line.rfind("error", 0) == 0 || line == "done") {
          close(fds[r]);
          fds[r] = -1;
          --open;
          break;
        }
        reports[r].lines.push_back(line);
      }
    }
  }
  for (int r = 0; r < size; ++r) {
    if (fds[r] >= 0) close(fds[r]);
    kill(pids[r], SIGKILL);
    waitpid(pids[r], nullptr, 0);
  }
  return reports;
}

// Every rank finished every case with no wrong value, and every rank's result has the same bits.
void CheckLayout(const std::vector<std::string>& hosts, const std::string& describe) {
  const auto reports = RunLayout(hosts);
  const size_t cases = kCounts.size() * kDTypes.size() * (2 * kOps.size() + hosts.size() + 1);
  for (size_t r = 0; r < reports.size(); ++r) {
    ASSERT_TRUE(reports[r].done) << "rank " << r << " did not finish; its last lines: "
                                 << (reports[r].lines.empty() ? "" : reports[r].lines.back());
    ASSERT_EQ(reports[r].lines.size(), cases + 1) << "rank " << r;
    EXPECT_EQ(reports[r].lines[0], "created " + describe);
    for (size_t c = 1; c <= cases; ++c) {
      const std::string& line = reports[r].lines[c];
      const size_t sp = line.find(' '), sp2 = line.rfind(' ');
      EXPECT_EQ(line.substr(sp + 1, sp2 - sp - 1), "0")
          << "rank " << r << " wrong values: " << line;
      if (line.rfind("reduce-scatter/", 0) == 0) continue;  // each rank has its own slice
      EXPECT_EQ(line, reports[0].lines[c].substr(0, sp) + " 0" + reports[0].lines[c].substr(sp2))
          << "rank " << r << " differs from rank 0 in its bits";
    }
  }
}

TEST(HierLoopbackTest, TwoHostsOfTwoAreExactAndBitwiseEqual) {
  CheckLayout({"host-a", "host-a", "host-b", "host-b"}, "4 ranks on 2 hosts (2,2)");
}

// Three rails: each host's buffer in thirds, and the last count % 3 elements (2 of the prime)
// through the leaders.
TEST(HierLoopbackTest, TwoHostsOfThreeAreExactAndBitwiseEqual) {
  CheckLayout({"host-a", "host-b", "host-a", "host-b", "host-a", "host-b"},
              "6 ranks on 2 hosts (3,3)");
}

TEST(HierLoopbackTest, TwoHostsOfTwoAndOneAreExactAndBitwiseEqual) {
  CheckLayout({"host-a", "host-b", "host-a"}, "3 ranks on 2 hosts (2,1)");
}

}  // namespace
}  // namespace cohort::testing
