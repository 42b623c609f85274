#include "common/error.h"

namespace cohort {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
    case ErrorKind::kTimeout:
      return "timeout";
    case ErrorKind::kPeerFailure:
      return "peer failure";
    case ErrorKind::kDataLoss:
      return "data loss";
    case ErrorKind::kUnavailable:
      return "unavailable";
    case ErrorKind::kUnauthenticated:
      return "unauthenticated";
    case ErrorKind::kUnsupported:
      return "unsupported";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "unknown";
}

void ThrowError(ErrorKind kind, const std::string& message) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      throw InvalidArgument(message);
    case ErrorKind::kTimeout:
      throw Timeout(message);
    case ErrorKind::kPeerFailure:
      throw PeerFailure(message);
    case ErrorKind::kDataLoss:
      throw DataLoss(message);
    case ErrorKind::kUnavailable:
      throw Unavailable(message);
    case ErrorKind::kUnauthenticated:
      throw Unauthenticated(message);
    case ErrorKind::kUnsupported:
      throw Unsupported(message);
    case ErrorKind::kInternal:
      throw Internal(message);
  }
  throw Internal(message);
}

}  // namespace cohort
