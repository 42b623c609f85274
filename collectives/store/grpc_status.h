// The two-way mapping between gRPC status codes and cohort's typed errors, used by the store's
// and the parameter servers' servers (errors -> status) and clients (status -> errors). This is
// the "check" for gRPC calls. Also the one process-wide setting every gRPC user needs.
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/channel_arguments.h>
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

// Turns off abseil's lock-order tracking for this process (once; any later call is free).
// Debian builds abseil without NDEBUG, so it runs in debug mode: every absl::Mutex that gRPC
// takes records lock-order edges in one global graph (GraphCycles::InsertEdge), which was 17% of
// the CPU of 4096 store clients joining at once (perf record of rendezvous_bench), whose join
// took 1.4x as long with it. Release builds of abseil never track. Every gRPC client and server
// of cohort calls this in its constructor, before it creates a channel or server: turning
// tracking on again later is not safe (a lock taken untracked is then released "not held").
void UseReleaseAbslMutexes();

// The channel settings every cohort gRPC client starts from (the store's, the parameter
// servers', etcd's): a refused connection retried within 100 ms to 1 s (peers usually start with
// or after their clients, and gRPC's default backoff grows to 2 minutes), DNS re-resolved every
// second (a Kubernetes Service name may not resolve until its pod is up), a keepalive ping every
// 10 s during calls, to notice a host that vanished without closing the connection in a long
// wait (etcd refuses pings more often than every 5 s), and no message size limit.
grpc::ChannelArguments ClientChannelArguments();

// The servers' check of a call's "authorization: Bearer <token>" metadata against `token`, in
// time that does not depend on where they differ. nullptr when the call may go on (also when
// `token` is empty: the server runs without one); otherwise the reason to refuse it, "the call
// carries no token" or "the call's token is wrong". The store and the parameter servers both
// answer with it.
const char* BearerTokenRefusal(const grpc::ServerContextBase& ctx, const std::string& token);

}  // namespace cohort::collectives
