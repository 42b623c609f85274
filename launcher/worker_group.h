// The worker processes of one node for one attempt: started together, their output passed
// through line by line with a "[rank N] " prefix, reaped as they exit, and stopped together
// (SIGTERM, then SIGKILL after a grace period).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cohort::launcher {

struct WorkerSpec {
  int rank = 0;
  int local_rank = 0;
  std::vector<std::string> argv;  // argv[0] is looked up on PATH unless it contains a '/'
  std::vector<std::string> env;   // the complete environment, "NAME=value"
};

struct WorkerExit {
  int rank = 0;
  int exit_code = 0;  // when it exited
  int signal = 0;     // when a signal ended it
  bool ok() const { return signal == 0 && exit_code == 0; }
  // "exited with code 3", "was killed by signal 9 (SIGKILL)".
  std::string Describe() const;
  // The shell's convention: the code, or 128 + the signal.
  int ShellCode() const { return signal ? 128 + signal : exit_code; }
};

class WorkerGroup {
 public:
  // Starts every worker. Throws InvalidArgument, naming the program and the reason, when one
  // cannot be executed (after stopping the ones already started).
  explicit WorkerGroup(const std::vector<WorkerSpec>& specs);
  // Kills and reaps whatever is still running.
  ~WorkerGroup();
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;

  // Workers that exited since the last call; never blocks.
  std::vector<WorkerExit> Reap();
  int Running() const;
  // Sends sig to every running worker and everything it started.
  void Signal(int sig);
  // Sends first_signal, waits up to grace for the workers to exit, SIGKILLs the rest and reaps
  // them all. Returns the exits it reaped.
  std::vector<WorkerExit> Stop(std::chrono::milliseconds grace, int first_signal);

 private:
  struct Child {
    pid_t pid = -1;
    int rank = 0;
    bool running = false;
  };
  struct Stream {
    int fd = -1;
    int rank = 0;
    int out_fd = 1;  // where its lines go
    std::string partial;
  };
  pid_t Spawn(const WorkerSpec& spec, int out_fd, int err_fd);
  void Pump();
  void Emit(Stream& s, const char* data, size_t n);

  std::vector<Child> children_;
  std::mutex streams_mu_;
  std::vector<Stream> streams_;
  std::atomic<bool> stop_pump_{false};
  std::thread pump_;
};

}  // namespace cohort::launcher
