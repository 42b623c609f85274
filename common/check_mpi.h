// COHORT_CHECK_MPI: MPI error codes to typed errors. Header-only so that common/ links no MPI;
// only the MPI backend includes it.
#pragma once

#include <mpi.h>

#include <string>

#include "common/check.h"

namespace cohort::internal {

inline ErrorKind KindFromMpi(int code) {
  int cls = code;
  MPI_Error_class(code, &cls);
  switch (cls) {
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_RANK:
    case MPI_ERR_ROOT:
    case MPI_ERR_OP:
    case MPI_ERR_ARG:
    case MPI_ERR_TRUNCATE:
    case MPI_ERR_COMM:
      return ErrorKind::kInvalidArgument;
    case MPI_ERR_NO_MEM:
    case MPI_ERR_INTERN:
      return ErrorKind::kInternal;
    default:
      return ErrorKind::kPeerFailure;
  }
}

inline std::string MpiErrorString(int code) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(msg, len);
}

}  // namespace cohort::internal

#define COHORT_CHECK_MPI(call)                                                             \
  do {                                                                                     \
    int cohort_mpi_rc_ = (call);                                                           \
    if (cohort_mpi_rc_ != MPI_SUCCESS) {                                                   \
      ::cohort::internal::FailCall(::cohort::internal::KindFromMpi(cohort_mpi_rc_), #call, \
                                   __FILE__, __LINE__,                                     \
                                   ::cohort::internal::MpiErrorString(cohort_mpi_rc_));    \
    }                                                                                      \
  } while (0)
