// Typed errors. Library code throws these; callers catch cohort::Error or a specific kind.
#pragma once

#include <stdexcept>
#include <string>

namespace cohort {

// What went wrong, in categories a caller can act on.
enum class ErrorKind {
  kInvalidArgument,  // the caller passed something wrong; the message says how to fix it
  kTimeout,          // a deadline passed; the message names what was waited for
  kPeerFailure,      // another rank died, hung or misbehaved; the message names it
  kDataLoss,         // stored data is missing, truncated or corrupt
  kUnavailable,      // a service or device cannot be reached or is absent
  kUnauthenticated,  // a credential was missing or refused
  kUnsupported,      // the operation exists but this backend/configuration lacks it
  kInternal,         // a bug in cohort or in a library it calls
};

// Short lower-case name of a kind, e.g. "timeout".
const char* ErrorKindName(ErrorKind kind);

// Base of every exception cohort throws. what() is one line, ready to show a user.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

#define COHORT_DEFINE_ERROR(Name, Kind)                                            \
  class Name : public Error {                                                      \
   public:                                                                         \
    explicit Name(const std::string& message) : Error(ErrorKind::Kind, message) {} \
  }

COHORT_DEFINE_ERROR(InvalidArgument, kInvalidArgument);
COHORT_DEFINE_ERROR(Timeout, kTimeout);
COHORT_DEFINE_ERROR(PeerFailure, kPeerFailure);
COHORT_DEFINE_ERROR(DataLoss, kDataLoss);
COHORT_DEFINE_ERROR(Unavailable, kUnavailable);
COHORT_DEFINE_ERROR(Unauthenticated, kUnauthenticated);
COHORT_DEFINE_ERROR(Unsupported, kUnsupported);
COHORT_DEFINE_ERROR(Internal, kInternal);

#undef COHORT_DEFINE_ERROR

// Throws the Error subclass that matches kind.
[[noreturn]] void ThrowError(ErrorKind kind, const std::string& message);

}  // namespace cohort
