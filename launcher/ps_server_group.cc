#include "launcher/ps_server_group.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "collectives/ps/ps_client.h"
#include "common/env.h"
#include "common/error.h"
#include "common/net.h"
#include "launcher/launch_plan.h"

extern char** environ;

namespace cohort::launcher {
namespace {

// Reads fd until a line containing "listening on host:port" arrives; returns the port, or 0 at
// the deadline or end of file.
int ReadPort(int fd, std::chrono::steady_clock::time_point deadline) {
  std::string text;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return 0;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    text.append(buf, static_cast<size_t>(n));
    const size_t at = text.find("listening on ");
    const size_t end = at == std::string::npos ? at : text.find('\n', at);
    if (end == std::string::npos) continue;
    const std::string addr = text.substr(at + 13, text.find(' ', at + 13) - at - 13);
    return net::ParseHostPort(addr, "ps-server output").port;
  }
}

}  // namespace

pid_t PsServerGroup::Spawn(int i, int n, const std::string& bind_host, const std::string& token,
                           int out_fd) {
  std::vector<std::string> argv = {
      "/proc/self/exe", "ps-server",       "--host",   bind_host,        "--port", "0",
      "--shard",        std::to_string(i), "--shards", std::to_string(n)};
  // The launcher's plan only gets here without a token on a reachable bind host when
  // --insecure-store allowed it (MakePlan refuses it otherwise); the server must not refuse again.
  if (token.empty()) argv.push_back("--insecure");
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "COHORT_TOKEN=", 13) != 0) env.emplace_back(*e);
  }
  env.push_back("COHORT_TOKEN=" + token);
  std::vector<char*> args, envp;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw Unavailable(fmt::format("could not start ps-server shard {}: {}", i, std::strerror(rc)));
  }
  return pid;
}

PsServerGroup::PsServerGroup(int first, int n, int shards, const std::string& bind_host,
                             const std::string& advertise_host, const std::string& token,
                             std::chrono::milliseconds timeout)
    : first_(first) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int i = first; i < first + n; ++i) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
      StopAll();
      throw Internal(fmt::format("pipe2 failed: {}", std::strerror(errno)));
    }
    int port = 0;
    try {
      servers_.push_back({Spawn(i, shards, bind_host, token, out[1]), true});
      ::close(out[1]);
      port = ReadPort(out[0], deadline);
    } catch (...) {
      ::close(out[0]);
      StopAll();
      throw;
    }
    ::close(out[0]);  // the server prints nothing more on stdout; its logs go to stderr
    if (port == 0) {
      StopAll();
      throw Unavailable(fmt::format(
          "ps-server shard {} of {} did not report a listening port within {:.0f} s (its "
          "errors are above)",
          i, shards, std::chrono::duration<double>(timeout).count()));
    }
    addresses_ += (i > first ? "," : "") + net::HostPort{advertise_host, port}.ToString();
  }
}

PsServerGroup::~PsServerGroup() { StopAll(); }

std::string PsServerGroup::Dead() {
  for (size_t i = 0; i < servers_.size(); ++i) {
    Server& s = servers_[i];
    if (!s.running) continue;
    int status = 0;
    if (::waitpid(s.pid, &status, WNOHANG) != s.pid) continue;
    s.running = false;
    if (WIFSIGNALED(status)) {
      const char* name = sigabbrev_np(WTERMSIG(status));
      return fmt::format("ps-server shard {} was killed by signal {} (SIG{})", first_ + i,
                         WTERMSIG(status), name ? name : "?");
    }
    return fmt::format("ps-server shard {} exited with code {}", first_ + i, WEXITSTATUS(status));
  }
  return "";
}

bool PsServerGroup::AllRunning() {
  while (!Dead().empty()) {
  }
  for (const Server& s : servers_) {
    if (!s.running) return false;
  }
  return true;
}

void PsServerGroup::StopAll() {
  for (Server& s : servers_) {
    if (s.running) ::kill(s.pid, SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (Server& s : servers_) {
    while (s.running) {
      if (::waitpid(s.pid, nullptr, WNOHANG) == s.pid) {
        s.running = false;
      } else if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(s.pid, SIGKILL);
        ::waitpid(s.pid, nullptr, 0);
        s.running = false;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
  }
}

std::vector<std::string> FinishStandaloneServers(const LaunchPlan& plan) {
  const std::string list = env::kPsServers.Str("");
  if (RunsPsServers(plan) || list.empty()) return {};
  std::vector<std::string> lines = collectives::ps::FinishServers(
      list, plan.token, plan.run_id.value, std::chrono::seconds(10));
  const size_t all = collectives::ps::SplitServerList(list).size();
  for (std::string& line : lines) line = "could not tell a ps-server the job finished: " + line;
  if (lines.size() < all) {
    lines.insert(lines.begin(), fmt::format("told {} ps-server{} that the job finished",
                                            all - lines.size(), all - lines.size() == 1 ? "" : "s"));
  }
  return lines;
}

}  // namespace cohort::launcher
