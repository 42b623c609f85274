// The two-way mapping between gRPC status codes and cohort's typed errors, used by the store's
// server (errors -> status) and client (status -> errors). This is the "check" for gRPC calls.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "common/error.h"

namespace cohort::collectives {

// Upper-case name of a code, e.g. "DEADLINE_EXCEEDED".
const char* GrpcCodeName(grpc::StatusCode code);

// The error kind a caller can act on for a failed call's code (never called with OK).
ErrorKind ErrorKindFromGrpc(grpc::StatusCode code);

// The code a server answers with when its handler throws an error of this kind.
grpc::StatusCode GrpcCodeFromErrorKind(ErrorKind kind);

// A failed status carrying e's message, for a server handler that caught e.
grpc::Status StatusFromError(const Error& e);

// Does nothing when status is OK; otherwise throws the matching typed error as
// "<context>: <server message> (gRPC CODE)".
void CheckGrpc(const grpc::Status& status, const std::string& context);

}  // namespace cohort::collectives
