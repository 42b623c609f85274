#include "common/check.h"

#include <cstring>

namespace cohort::internal {

void FailCall(ErrorKind kind, const char* call, const char* file, int line,
              const std::string& detail) {
  // Keep only the path from the repository root: "collectives/mpi/mpi_communicator.cc".
  std::string where = file;
  for (const char* top : {"/common/", "/collectives/", "/launcher/", "/bench/", "/tests/"}) {
    auto pos = where.rfind(top);
    if (pos != std::string::npos) {
      where = where.substr(pos + 1);
      break;
    }
  }
  ThrowError(kind, fmt::format("{} failed at {}:{}: {}", call, where, line, detail));
}

ErrorKind KindFromErrno(int err) {
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ENETUNREACH:
    case EHOSTUNREACH:
      return ErrorKind::kUnavailable;
    case ETIMEDOUT:
      return ErrorKind::kTimeout;
    case EACCES:
    case EPERM:
      return ErrorKind::kUnauthenticated;
    case EINVAL:
    case ENOENT:
    case EEXIST:
    case ENOTDIR:
    case EISDIR:
      return ErrorKind::kInvalidArgument;
    default:
      return ErrorKind::kInternal;
  }
}

}  // namespace cohort::internal
