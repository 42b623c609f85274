#include "launcher/worker_group.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace cohort::launcher {
namespace {

// write(2) in a loop: one call per line keeps lines from different workers whole.
void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

}  // namespace

std::string WorkerExit::Describe() const {
  if (signal) {
    const char* name = sigabbrev_np(signal);
    return fmt::format("was killed by signal {} (SIG{})", signal, name ? name : "?");
  }
  return fmt::format("exited with code {}", exit_code);
}

WorkerGroup::WorkerGroup(const std::vector<WorkerSpec>& specs) {
  for (const WorkerSpec& spec : specs) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      throw Internal(fmt::format("pipe2 failed: {}", std::strerror(errno)));
    }
    pid_t pid;
    try {
      pid = Spawn(spec, out[1], err[1]);
    } catch (...) {
      for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
      Stop(std::chrono::milliseconds(0), SIGKILL);
      for (auto& s : streams_) ::close(s.fd);  // no destructor runs for a throwing constructor
      throw;
    }
    ::close(out[1]);
    ::close(err[1]);
    children_.push_back({pid, spec.rank, true});
    std::lock_guard<std::mutex> lock(streams_mu_);
    streams_.push_back({out[0], spec.rank, 1, ""});
    streams_.push_back({err[0], spec.rank, 2, ""});
  }
  pump_ = std::thread([this] { Pump(); });
}

WorkerGroup::~WorkerGroup() {
  Stop(std::chrono::milliseconds(0), SIGKILL);
  // Output still in the pipes is printed; a grandchild that keeps a pipe open cannot hold us up
  // for more than a second.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(streams_mu_);
      if (streams_.empty() || std::chrono::steady_clock::now() >= deadline) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop_pump_ = true;
  pump_.join();
  for (auto& s : streams_) ::close(s.fd);
}

pid_t WorkerGroup::Spawn(const WorkerSpec& spec, int out_fd, int err_fd) {
  // Everything the child needs is built before fork(): after it, only async-signal-safe calls.
  std::vector<char*> argv, envp;
  std::vector<std::string> args = spec.argv, env = spec.env;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  int report[2];  // the child writes errno here if exec fails; closes on a successful exec
  if (::pipe2(report, O_CLOEXEC) != 0) throw Internal("pipe2 failed");
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(report[0]);
    ::close(report[1]);
    throw Internal(fmt::format("fork failed: {}", std::strerror(errno)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);                     // its own group: signals reach what it starts too
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a launcher killed with SIGKILL takes it along
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the launcher blocks SIGTERM; workers must not
    // The launcher ignores SIGPIPE, and SIG_IGN would survive exec: workers start with the
    // default, as under torchrun (cohort's own libraries ignore it where they open sockets).
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execvpe(argv[0], argv.data(), envp.data());
    int e = errno;
    (void)!::write(report[1], &e, sizeof(e));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from here, so that Signal() works even before the child ran
  ::close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == sizeof(child_errno)) {
    ::waitpid(pid, nullptr, 0);
    throw InvalidArgument(fmt::format("cannot run '{}': {}{}", spec.argv[0],
                                      std::strerror(child_errno),
                                      spec.argv[0].find('/') == std::string::npos
                                          ? " (not found on PATH; give its path, e.g. ./train)"
                                          : ""));
  }
  return pid;
}

void WorkerGroup::Emit(Stream& s, const char* data, size_t n) {
  s.partial.append(data, n);
  size_t start = 0;
  for (size_t nl; (nl = s.partial.find('\n', start)) != std::string::npos; start = nl + 1) {
    WriteAll(s.out_fd, fmt::format("[rank {}] {}\n", s.rank,
                                   std::string_view(s.partial).substr(start, nl - start)));
  }
  s.partial.erase(0, start);
}

void WorkerGroup::Pump() {
  char buf[65536];
  for (;;) {
    std::vector<pollfd> fds;
    {
      std::lock_guard<std::mutex> lock(streams_mu_);
      if (streams_.empty() || stop_pump_) return;
      for (const auto& s : streams_) fds.push_back({s.fd, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 100) <= 0) {
      if (stop_pump_) return;
      continue;
    }
    std::lock_guard<std::mutex> lock(streams_mu_);
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Stream& s = streams_[i];
      ssize_t n = ::read(s.fd, buf, sizeof(buf));
      if (n > 0) {
        Emit(s, buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        if (!s.partial.empty()) Emit(s, "\n", 1);  // the last line lacked a newline
        ::close(s.fd);
        s.fd = -1;
      }
    }
    streams_.erase(
        std::remove_if(streams_.begin(), streams_.end(), [](const Stream& s) { return s.fd < 0; }),
        streams_.end());
  }
}

std::vector<WorkerExit> WorkerGroup::Reap() {
  std::vector<WorkerExit> exits;
  for (Child& c : children_) {
    if (!c.running) continue;
    int status = 0;
    pid_t got;
    do {
      got = ::waitpid(c.pid, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got != c.pid) continue;
    c.running = false;
    WorkerExit e;
    e.rank = c.rank;
    if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
    exits.push_back(e);
  }
  return exits;
}

int WorkerGroup::Running() const {
  int n = 0;
  for (const Child& c : children_) n += c.running;
  return n;
}

void WorkerGroup::Signal(int sig) {
  for (const Child& c : children_) {
    if (c.running) ::kill(-c.pid, sig);
  }
}

std::vector<WorkerExit> WorkerGroup::Stop(std::chrono::milliseconds grace, int first_signal) {
  std::vector<WorkerExit> exits = Reap();
  if (Running() == 0) return exits;
  Signal(first_signal);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (Running() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (auto& e : Reap()) exits.push_back(e);
  }
  if (Running() > 0) {
    Signal(SIGKILL);
    while (Running() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      for (auto& e : Reap()) exits.push_back(e);
    }
  }
  return exits;
}

}  // namespace cohort::launcher
