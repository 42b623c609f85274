// Starting real processes from tests: argv + extra environment, output captured to a file,
// waited for with a deadline (and killed past it), so no test can hang.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cohort::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that ended it, 0 if it exited
  bool timed_out = false;
  std::string output;  // stdout and stderr, interleaved
  double seconds = 0;
};

class Subprocess {
 public:
  // Starts argv[0] (a path) with the current environment plus env (overriding).
  Subprocess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);
  ~Subprocess();  // kills the process if still running
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits until the process exits or timeout passes (then SIGKILLs it and its group).
  ProcessResult Wait(std::chrono::milliseconds timeout);
  // Sends sig to the process and everything it started.
  void Kill(int sig);
  // Everything it printed so far.
  std::string Output() const;
  // Waits for a complete output line containing text and returns it; nullopt if none appears
  // within timeout (or the process exits first).
  std::optional<std::string> AwaitLine(const std::string& text, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  std::chrono::steady_clock::time_point start_;
  bool reaped_ = false;
};

// Starts several processes, then waits for all with one shared deadline.
std::vector<ProcessResult> RunAll(const std::vector<std::vector<std::string>>& argvs,
                                  const std::vector<std::map<std::string, std::string>>& envs,
                                  std::chrono::milliseconds timeout);

// Path of a binary built next to the tests (COHORT_BIN_DIR, set by CMake).
std::string BinPath(const std::string& name);

}  // namespace cohort::testing
