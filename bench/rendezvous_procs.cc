#include "bench/rendezvous_procs.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "collectives/rendezvous.h"
#include "common/error.h"

extern char** environ;

namespace cohort::bench {

using collectives::GrpcStoreClient;
using collectives::JoinGroup;
using Millis = std::chrono::milliseconds;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double CpuMs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int CountConnections(int port) {
  int n = 0;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state;
      fields >> sl >> local >> remote >> state;
      const auto colon = remote.rfind(':');
      if (state == "01" && colon != std::string::npos &&
          std::stoi(remote.substr(colon + 1), nullptr, 16) == port) {
        ++n;
      }
    }
  }
  return n;
}

std::unique_ptr<GrpcStoreClient> ConnectClient(const std::string& addr, const std::string& token,
                                               bool warm) {
  auto c = std::make_unique<GrpcStoreClient>(addr, token, std::chrono::seconds(60));
  c->Connect();
  if (warm) c->List("rdzv/warm-up/");
  return c;
}

namespace {

// A pipe whose ends sit above fd 5, close-on-exec (the children get theirs through dup2).
void Pipe(int fds[2]) {
  int raw[2];
  if (pipe(raw) != 0) throw Internal("pipe failed");
  for (int i = 0; i < 2; ++i) {
    fds[i] = fcntl(raw[i], F_DUPFD_CLOEXEC, 10);
    close(raw[i]);
  }
}

// Reads exactly len bytes, waiting at most timeout_ms in all; false on EOF or timeout.
bool ReadAll(int fd, void* buf, size_t len, int timeout_ms) {
  auto* p = static_cast<char*>(buf);
  const int64_t end = NowNs() + int64_t{timeout_ms} * 1000000;
  while (len > 0) {
    pollfd pfd{fd, POLLIN, 0};
    const int left = static_cast<int>(std::max<int64_t>(0, (end - NowNs()) / 1000000));
    if (poll(&pfd, 1, left) <= 0) return false;
    const ssize_t got = read(fd, p, len);
    if (got <= 0) return false;
    p += got;
    len -= static_cast<size_t>(got);
  }
  return true;
}

}  // namespace

Sample RunProcs(const ProcRun& run) {
  const int n = run.n;
  int start[2], ready[2], result[2], leave[2];
  Pipe(start);
  Pipe(ready);
  Pipe(result);
  Pipe(leave);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, start[0], 3);
  posix_spawn_file_actions_adddup2(&fa, ready[1], 4);
  posix_spawn_file_actions_adddup2(&fa, result[1], 5);
  posix_spawn_file_actions_adddup2(&fa, leave[0], 6);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    std::vector<std::string> args = {
        "/proc/self/exe", "--worker",        "--store",   run.addr,
        "--scope",        run.scope,         "--rank",    std::to_string(r),
        "--size",         std::to_string(n), "--timeout", std::to_string(run.timeout_s)};
    if (run.cold) args.push_back("--cold");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid;
    if (posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ) != 0) {
      throw Internal("posix_spawn failed");
    }
    pids.push_back(pid);
  }
  posix_spawn_file_actions_destroy(&fa);
  for (int fd : {start[0], ready[1], result[1], leave[0]}) close(fd);
  std::vector<char> acks(n);
  const bool all_ready = ReadAll(ready[0], acks.data(), acks.size(), 300000);
  if (run.hold_s > 0) {
    fmt::print(stderr, "all {} ready; signal in {} s\n", n, run.hold_s);
    std::this_thread::sleep_for(std::chrono::duration<double>(run.hold_s));
  }
  const int64_t t0 = NowNs();
  const double cpu0 = CpuMs(CLOCK_PROCESS_CPUTIME_ID);
  close(start[1]);                      // EOF on every child's fd 3 at once: the start signal
  std::vector<int64_t> res(2 * n, -1);  // per worker: done (ns), CPU spent joining (ns)
  bool all_done = all_ready && ReadAll(result[0], res.data(), res.size() * sizeof(int64_t),
                                       static_cast<int>(run.timeout_s * 1000) + 30000);
  const double store_cpu = CpuMs(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
  const int conns = all_done ? CountConnections(run.port) : 0;
  for (int fd : {leave[1], ready[0], result[0]}) close(fd);  // leave: the workers may exit
  int failed = 0;
  for (pid_t pid : pids) {
    int status = 0;
    if (!all_done) kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  int64_t last = 0, worker_cpu = 0;
  for (int r = 0; r < n; ++r) {
    if (res[2 * r] < 0) all_done = false;
    last = std::max(last, res[2 * r]);
    worker_cpu += res[2 * r + 1];
  }
  if (!all_done || failed > 0) {
    throw Internal(fmt::format("procs n={}: {} of {} workers failed", n, failed, n));
  }
  return {(last - t0) / 1e6, conns, store_cpu + worker_cpu / 1e6, store_cpu};
}

int RunProcWorker(const ProcRun& run, int rank) {
  // Die with the bench: a killed bench's thousands of workers would otherwise see the start
  // pipe close, join, and wait out their timeout, holding the machine's thread slots.
  const pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) return 2;  // it was already gone
  const char* env_token = std::getenv("COHORT_TOKEN");
  const std::string token = env_token ? env_token : "";
  std::unique_ptr<GrpcStoreClient> client;
  int64_t done[2] = {-1, 0};  // when it joined, and the CPU it spent from the signal on
  try {
    if (!run.cold) client = ConnectClient(run.addr, token, true);
    char c = 1;
    if (write(4, &c, 1) != 1) return 2;
    while (read(3, &c, 1) > 0) {
    }
    const double cpu0 = CpuMs(CLOCK_PROCESS_CPUTIME_ID);
    if (run.cold) client = ConnectClient(run.addr, token, false);
    JoinGroup(*client, run.scope, rank, run.n, Millis(static_cast<int64_t>(run.timeout_s * 1000)),
              "bench");
    done[0] = NowNs();
    done[1] = static_cast<int64_t>((CpuMs(CLOCK_PROCESS_CPUTIME_ID) - cpu0) * 1e6);
  } catch (const std::exception& e) {
    fmt::print(stderr, "rendezvous_bench worker {}: {}\n", rank, e.what());
  }
  const bool wrote = write(5, &done, sizeof(done)) == sizeof(done);
  char c;
  while (read(6, &c, 1) > 0) {  // wait until the parent has counted the connections
  }
  return done[0] >= 0 && wrote ? 0 : 1;
}

}  // namespace cohort::bench
