#include "tests/util/kube/pod_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace cohort::kube {
namespace {

std::string Resolve(const std::string& command, const std::map<std::string, std::string>& env) {
  if (command.find('/') != std::string::npos) return command;
  auto it = env.find("PATH");
  const char* host = std::getenv("PATH");
  std::stringstream path(it != env.end() ? it->second : host ? host : "/usr/bin:/bin");
  for (std::string dir; std::getline(path, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + command;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error("exec: \"" + command + "\": executable file not found in $PATH");
}

void KillGroup(int) { ::kill(0, SIGKILL); }

void SetHandler(int sig, void (*handler)(int)) {
  struct sigaction a {};
  a.sa_handler = handler;
  sigaction(sig, &a, nullptr);
}

// The forked child: a shim (like a container runtime's) that leads the pod's process group,
// runs the container as its own child and exits with its status. The double's death reaches it
// as SIGUSR2 (PR_SET_PDEATHSIG), and it then SIGKILLs the whole group, so nothing the container
// started outlives the double. It ignores SIGTERM and SIGINT sent to the group: those are for
// the container, which gets them with default handling and no blocked signals (the double's
// main thread blocks SIGTERM to sigwait for it). Only async-signal-safe calls after fork.
[[noreturn]] void RunShim(pid_t parent, const std::string& exe, char* const* argv,
                          char* const* envp, const std::string& log, const std::string& dir) {
  setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  SetHandler(SIGTERM, SIG_IGN);
  SetHandler(SIGINT, SIG_IGN);
  SetHandler(SIGUSR2, KillGroup);
  prctl(PR_SET_PDEATHSIG, SIGUSR2);
  if (getppid() != parent) _exit(127);  // the double is already gone
  const pid_t child = fork();
  if (child == 0) {
    SetHandler(SIGTERM, SIG_DFL);
    SetHandler(SIGINT, SIG_DFL);
    SetHandler(SIGUSR2, SIG_DFL);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    if (chdir(dir.c_str()) != 0) _exit(127);
    execve(exe.c_str(), argv, envp);
    _exit(127);
  }
  int status = 0;
  while (child > 0 && waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (child < 0) _exit(127);
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

}  // namespace

PodProcess::PodProcess(const std::vector<std::string>& argv,
                       const std::map<std::string, std::string>& env, const std::string& dir) {
  if (argv.empty()) throw std::runtime_error("no command");
  const std::string exe = Resolve(argv[0], env);
  if (access(exe.c_str(), X_OK) != 0) {
    throw std::runtime_error("exec: \"" + exe + "\": " + std::strerror(errno));
  }
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_strings, args = argv;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (auto& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);
  const std::string log = dir + "/log";
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) RunShim(parent, exe, argp.data(), envp.data(), log, dir);  // never returns
  setpgid(pid_, pid_);  // also from here, so a signal right after fork reaches the group
}

PodProcess::~PodProcess() {
  if (!reaped_ && pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::optional<PodExit> PodProcess::Poll() {
  if (reaped_) return std::nullopt;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) != pid_) {
    if (kill_at_ && std::chrono::steady_clock::now() >= *kill_at_) {
      ::kill(-pid_, SIGKILL);
      kill_at_.reset();
    }
    return std::nullopt;
  }
  reaped_ = true;
  ::kill(-pid_, SIGKILL);  // whatever it left behind in its group
  PodExit e;
  if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) {
    e.signal = WTERMSIG(status);
    e.exit_code = 128 + e.signal;
  }
  return e;
}

void PodProcess::Stop(std::chrono::milliseconds grace) {
  if (reaped_ || kill_at_) return;
  ::kill(-pid_, SIGTERM);
  kill_at_ = std::chrono::steady_clock::now() + grace;
}

void PodProcess::Signal(int sig) {
  if (!reaped_) ::kill(-pid_, sig);
}

}  // namespace cohort::kube
