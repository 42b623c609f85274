// One pod's container as a local process, under a shim that leads its process group and
// SIGKILLs the group when the double dies (PR_SET_PDEATHSIG of the thread that started it, the
// controllers' thread; see RunShim in pod_process.cc); stdout and stderr to <dir>/log, working
// directory <dir>; stopped as a kubelet stops a container: SIGTERM to the group, SIGKILL after
// the grace period. The exit code is the container's (128 + signal when a signal ended it).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cohort::kube {

struct PodExit {
  int exit_code = 0;  // 128 + signal when a signal ended it, as the container runtime reports
  int signal = 0;
};

class PodProcess {
 public:
  // argv[0] without a '/' is looked up in PATH (of env, else of the double). Throws
  // std::runtime_error when it cannot start (the pod then fails with that message).
  PodProcess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
             const std::string& dir);
  ~PodProcess();  // kills the group and reaps
  PodProcess(const PodProcess&) = delete;
  PodProcess& operator=(const PodProcess&) = delete;

  pid_t pid() const { return pid_; }  // the shim's: also the process group's id
  // The exit, once the process has ended (reaps it); nullopt while it runs.
  std::optional<PodExit> Poll();
  // SIGTERM to the group now, SIGKILL once `grace` has passed (on a later Poll()).
  void Stop(std::chrono::milliseconds grace);
  // Sends sig to the group.
  void Signal(int sig);

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::optional<std::chrono::steady_clock::time_point> kill_at_;
};

}  // namespace cohort::kube
