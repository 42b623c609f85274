// The launcher's one-line verdict, left where the container's watcher reads it: Kubernetes
// shows the content of the file at the container's terminationMessagePath (by default
// /dev/termination-log) as its termination message, which the operator puts in the
// TrainingJob's status ("rank 2 on node 0 exited with code 7").
#pragma once

#include <string>

#include "common/env.h"

namespace cohort::launcher {

// Kubernetes keeps at most this many bytes of a termination message.
inline constexpr size_t kTerminationMessageLimit = 4096;

// The file to write: COHORT_TERMINATION_LOG when set, else /dev/termination-log when it exists
// and is writable, else "" (no file: a laptop, or a pod without the mount). from: the
// environment to read (nullptr: the process's).
std::string TerminationLogPath(const env::Map* from = nullptr);

// Overwrites the file at TerminationLogPath() with `line` and a newline, cut to
// kTerminationMessageLimit bytes. Returns whether it wrote; a file that cannot be written is
// ignored (the verdict is also on stderr, and never worth failing the job for).
bool WriteTerminationMessage(const std::string& line);

}  // namespace cohort::launcher
