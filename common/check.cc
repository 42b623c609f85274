#include "common/check.h"

#include <cstring>

namespace cohort::internal {

void FailCall(ErrorKind kind, const char* call, const char* file, int line,
              const std::string& detail) {
  // Keep only the path from the repository root: "collectives/mpi/mpi_communicator.cc". With
  // CCACHE_BASEDIR set, ccache compiles with paths relative to the build folder, so __FILE__ is
  // "../../collectives/..." instead: its leading "./" and "../" go too.
  std::string where = file;
  const std::string root = COHORT_SOURCE_DIR;
  if (where.compare(0, root.size(), root) == 0) where = where.substr(root.size());
  while (where.compare(0, 2, "./") == 0 || where.compare(0, 3, "../") == 0) {
    where = where.substr(where[1] == '/' ? 2 : 3);
  }
  // "MPI_Allreduce(op.in.data, ...)" reads worse than the callee's name alone.
  std::string callee = call;
  if (auto paren = callee.find('('); paren != std::string::npos)
    callee = callee.substr(0, paren) + "()";
  ThrowError(kind, fmt::format("{} failed at {}:{}: {}", callee, where, line, detail));
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
