#include "collectives/store/grpc_status.h"

#include <absl/synchronization/mutex.h>
#include <fmt/format.h>

#include <mutex>
#include <string_view>

namespace cohort::collectives {

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN_CODE";
  }
}

ErrorKind ErrorKindFromGrpc(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
      return ErrorKind::kInvalidArgument;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return ErrorKind::kTimeout;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return ErrorKind::kUnauthenticated;
    // CANCELLED reaches a client whose call the server dropped, e.g. while shutting down.
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return ErrorKind::kUnavailable;
    case grpc::StatusCode::UNIMPLEMENTED:
      return ErrorKind::kUnsupported;
    case grpc::StatusCode::DATA_LOSS:
      return ErrorKind::kDataLoss;
    default:
      return ErrorKind::kInternal;
  }
}

grpc::StatusCode GrpcCodeFromErrorKind(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case ErrorKind::kTimeout:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case ErrorKind::kPeerFailure:
      return grpc::StatusCode::ABORTED;
    case ErrorKind::kDataLoss:
      return grpc::StatusCode::DATA_LOSS;
    case ErrorKind::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
    case ErrorKind::kUnauthenticated:
      return grpc::StatusCode::UNAUTHENTICATED;
    case ErrorKind::kUnsupported:
      return grpc::StatusCode::UNIMPLEMENTED;
    case ErrorKind::kInternal:
      return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::INTERNAL;
}

grpc::Status StatusFromError(const Error& e) {
  return grpc::Status(GrpcCodeFromErrorKind(e.kind()), e.what());
}

void CheckGrpc(const grpc::Status& status, const std::string& context) {
  if (status.ok()) return;
  ThrowError(ErrorKindFromGrpc(status.error_code()),
             fmt::format("{}: {} (gRPC {})", context, status.error_message(),
                         GrpcCodeName(status.error_code())));
}

void UseReleaseAbslMutexes() {
  static std::once_flag once;
  std::call_once(once,
                 [] { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); });
}

grpc::ChannelArguments ClientChannelArguments() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return args;
}

const char* BearerTokenRefusal(const grpc::ServerContextBase& ctx, const std::string& token) {
  if (token.empty()) return nullptr;
  constexpr std::string_view kBearer = "Bearer ";
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return "the call carries no token";
  const std::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, kBearer.size()) != kBearer) return "the call's token is wrong";
  const std::string_view given = value.substr(kBearer.size());
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(token[i]));
  }
  return diff == 0 ? nullptr : "the call's token is wrong";
}

}  // namespace cohort::collectives
