// COHORT_CHECK_CUDA and COHORT_CHECK_NCCL: CUDA runtime and NCCL error codes to typed errors.
// Header-only so that common/ links neither library; the NCCL half is compiled only where
// <nccl.h> is on the include path (CUDA-only code such as GPU checkpoint staging needs no NCCL).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "common/check.h"

namespace cohort::internal {

// The error kind a caller can act on: a missing GPU or driver is Unavailable (auto falls back to
// another backend), a bad pointer or device ordinal is InvalidArgument, the rest is Internal.
inline ErrorKind KindFromCuda(cudaError_t err) {
  switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorStubLibrary:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorSystemNotReady:
    case cudaErrorInitializationError:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorMpsConnectionFailed:
    case cudaErrorMemoryAllocation:  // out of device memory: the resource is exhausted
      return ErrorKind::kUnavailable;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevice:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidPitchValue:
    case cudaErrorInvalidMemcpyDirection:
    case cudaErrorInvalidResourceHandle:
      return ErrorKind::kInvalidArgument;
    case cudaErrorNotSupported:
    case cudaErrorNotPermitted:
      return ErrorKind::kUnsupported;
    case cudaErrorLaunchTimeout:
    case cudaErrorTimeout:
      return ErrorKind::kTimeout;
    default:
      return ErrorKind::kInternal;
  }
}

// "CUDA driver version is insufficient for CUDA runtime version (cudaErrorInsufficientDriver)".
inline std::string CudaErrorString(cudaError_t err) {
  const char* name = cudaGetErrorName(err);
  const char* text = cudaGetErrorString(err);
  return fmt::format("{} ({})", text ? text : "unknown CUDA error",
                     name ? name : std::to_string(static_cast<int>(err)));
}

}  // namespace cohort::internal

// Throws the typed error of a failed CUDA runtime call. The sticky per-thread error is cleared
// (cudaGetLastError) so that the next, unrelated call does not report it again.
#define COHORT_CHECK_CUDA(call)                                                              \
  do {                                                                                       \
    cudaError_t cohort_cuda_rc_ = (call);                                                    \
    if (cohort_cuda_rc_ != cudaSuccess) {                                                    \
      (void)cudaGetLastError();                                                              \
      ::cohort::internal::FailCall(::cohort::internal::KindFromCuda(cohort_cuda_rc_), #call, \
                                   __FILE__, __LINE__,                                       \
                                   ::cohort::internal::CudaErrorString(cohort_cuda_rc_));    \
    }                                                                                        \
  } while (0)

#if __has_include(<nccl.h>)
#include <nccl.h>

namespace cohort::internal {

inline ErrorKind KindFromNccl(ncclResult_t rc) {
  switch (rc) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return ErrorKind::kInvalidArgument;
    case ncclRemoteError:  // a peer failed or went away
    case ncclSystemError:  // a socket or other system call failed: usually the network or a peer
      return ErrorKind::kPeerFailure;
    case ncclUnhandledCudaError:  // the GPU or its driver failed under NCCL (no GPU, no memory)
      return ErrorKind::kUnavailable;
    default:  // ncclInternalError, and ncclInProgress where the caller did not expect it
      return ErrorKind::kInternal;
  }
}

// "invalid argument (run with NCCL_DEBUG=WARN for details); NCCL: <last error message>".
inline std::string NcclErrorString(ncclResult_t rc) {
  std::string out = ncclGetErrorString(rc);
  // The comm argument is unused by NCCL; the message is the process's last NCCL error.
  const char* last = ncclGetLastError(nullptr);
  if (last && *last) {
    std::string msg = last;
    for (char& c : msg) {
      if (c == '\n' || c == '\r') c = ' ';  // errors are one line
    }
    while (!msg.empty() && msg.back() == ' ') msg.pop_back();
    if (!msg.empty()) out += "; NCCL: " + msg;
  }
  return out;
}

}  // namespace cohort::internal

// Throws the typed error of a failed NCCL call. ncclInProgress counts as a failure here: calls on
// a non-blocking communicator handle it themselves before checking.
#define COHORT_CHECK_NCCL(call)                                                              \
  do {                                                                                       \
    ncclResult_t cohort_nccl_rc_ = (call);                                                   \
    if (cohort_nccl_rc_ != ncclSuccess) {                                                    \
      ::cohort::internal::FailCall(::cohort::internal::KindFromNccl(cohort_nccl_rc_), #call, \
                                   __FILE__, __LINE__,                                       \
                                   ::cohort::internal::NcclErrorString(cohort_nccl_rc_));    \
    }                                                                                        \
  } while (0)

#endif  // __has_include(<nccl.h>)
