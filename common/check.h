// Checked calls. Every call into a foreign library goes through a macro that turns its error code
// into a typed cohort::Error carrying the call, the file:line and the library's own message.
// The per-library macros live in check_<lib>.h (header-only, so common/ links none of them).
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"

namespace cohort::internal {

// Builds "CALL failed at FILE:LINE: DETAIL" and throws it as KIND.
[[noreturn]] void FailCall(ErrorKind kind, const char* call, const char* file, int line,
                           const std::string& detail);

// Maps an errno value to the error kind a caller can act on.
ErrorKind KindFromErrno(int err);

}  // namespace cohort::internal

// Throws when cond is false; the message is formatted with fmt.
#define COHORT_ENFORCE(cond, Kind, ...)                            \
  do {                                                             \
    if (!(cond)) throw ::cohort::Kind(::fmt::format(__VA_ARGS__)); \
  } while (0)

// For POSIX calls that return -1 and set errno. Retries on EINTR; returns the call's result.
#define COHORT_SYSCHECK(call)                                                                     \
  ([&]() {                                                                                        \
    for (;;) {                                                                                    \
      auto cohort_rc_ = (call);                                                                   \
      if (cohort_rc_ != -1) return cohort_rc_;                                                    \
      int cohort_errno_ = errno;                                                                  \
      if (cohort_errno_ == EINTR) continue;                                                       \
      ::cohort::internal::FailCall(::cohort::internal::KindFromErrno(cohort_errno_), #call,       \
                                   __FILE__, __LINE__, ::std::string(::strerror(cohort_errno_))); \
    }                                                                                             \
  }())
