#include "collectives/ps/ps_exchange.h"

#include <fmt/format.h>

#include <cstring>

#include "collectives/ps/push_combine.h"
#include "collectives/ps/wire.h"
#include "collectives/store/grpc_status.h"
#include "common/error.h"

namespace cohort::collectives::ps {
namespace {

// After a failure that may echo another (a peer gave up, a deadline), how long to wait for the
// failure that caused it: a dead server fails every rank's call to it within milliseconds.
constexpr std::chrono::milliseconds kEchoGrace{1000};
// Past the calls' own gRPC deadline, how long before the exchange stops waiting for them.
constexpr std::chrono::seconds kDeadlineSlack{5};

bool IsEcho(grpc::StatusCode code) {
  return code == grpc::StatusCode::ABORTED || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::CANCELLED;
}

}  // namespace

::cohort::ps::PushRequest& Exchange::Add(PsServerClient* server, const void* data, size_t bytes) {
  calls_.emplace_back();
  Call& call = calls_.back();
  call.server = server;
  call.data = data;
  call.bytes = bytes;
  return call.req;
}

void Exchange::Encode(Call& call) {
  // Concatenated encodings merge: the header's fields, then the data field pointing at the
  // caller's bytes.
  call.request = WithBorrowedBytesField(call.req.SerializeAsString(),
                                        ::cohort::ps::PushRequest::kDataFieldNumber, call.data,
                                        call.bytes);
}

void Exchange::Decode(Call& call) {
  call.slices.clear();
  if (call.reply.Valid()) (void)call.reply.Dump(&call.slices);
  if (!FindOnlyBytesField(call.slices, 1, &call.result_offset, &call.result_size)) {
    throw Internal(fmt::format("ps {}: its answer to {} is not a PullReply", call.server->Name(),
                               DescribePush(call.req)));
  }
}

void Exchange::CopyResult(size_t i, size_t from, size_t n, void* dst) const {
  const Call& call = calls_[i];
  CopyFromSlices(call.slices, call.result_offset + from, n, dst);
}

void Exchange::Finished(Call& call, grpc::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  call.status = std::move(status);
  call.done = true;
  ++finished_;
  if (!call.status.ok()) {
    if (!IsEcho(call.status.error_code())) {
      if (!decisive_) decisive_ = &call;
    } else if (!echo_) {
      echo_ = &call;
      echo_at_ = std::chrono::steady_clock::now();
    }
  }
  cv_.notify_all();
}

void Exchange::Run(PsServerClient::Deadline deadline) {
  for (Call& call : calls_) Encode(call);
  for (Call& call : calls_) {
    call.server->PushPullRaw(&call.ctx, &call.request, &call.reply, deadline,
                             [this, &call](grpc::Status s) { Finished(call, std::move(s)); });
  }
  std::unique_lock<std::mutex> lock(mu_);
  AwaitOutcome(lock, deadline);
  if (finished_ < calls_.size()) {
    for (Call& call : calls_) {
      if (!call.done) call.ctx.TryCancel();
    }
    cv_.wait(lock, [this] { return finished_ == calls_.size(); });  // cancelled calls end at once
  }
  const Call* failed = decisive_ ? decisive_ : echo_;
  if (!failed) {
    lock.unlock();
    for (Call& call : calls_) Decode(call);
    return;
  }
  lock.unlock();
  Throw(*failed);
}

void Exchange::AwaitOutcome(std::unique_lock<std::mutex>& lock, PsServerClient::Deadline deadline) {
  const auto give_up = std::chrono::steady_clock::now() +
                       (deadline - std::chrono::system_clock::now()) + kDeadlineSlack;
  for (;;) {
    if (finished_ == calls_.size() || decisive_) return;
    auto until = give_up;
    if (echo_) {
      until = std::min(until, echo_at_ + kEchoGrace);
    }
    if (std::chrono::steady_clock::now() >= until) {
      if (!echo_ && !decisive_) {
        // The calls should have ended with DEADLINE_EXCEEDED; report it ourselves.
        echo_ = &calls_.front();
        for (const Call& c : calls_) {
          if (!c.done) {
            echo_ = &c;
            break;
          }
        }
      }
      return;
    }
    cv_.wait_until(lock, until);
  }
}

void Exchange::Throw(const Call& call) const {
  const grpc::Status& s = call.status;
  const std::string push = DescribePush(call.req);
  const std::string& server = call.server->Name();
  switch (s.error_code()) {
    case grpc::StatusCode::OK:  // our own give-up past the deadline (see AwaitOutcome)
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      throw Timeout(fmt::format(
          "{} on ps {}: no answer before the deadline (some rank never pushed it, or the server "
          "is stuck)",
          push, server));
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
      throw Unavailable(fmt::format(
          "lost ps {} during {}: {} (gRPC {}); did its `cohort ps-server --shard {}` exit?", server,
          push, s.error_message(), GrpcCodeName(s.error_code()), call.server->Shard()));
    case grpc::StatusCode::PERMISSION_DENIED:
      throw Unauthenticated(fmt::format(
          "ps {} refused {}: {} (gRPC PERMISSION_DENIED); give workers and servers the same "
          "COHORT_TOKEN",
          server, push, s.error_message()));
    default:
      ThrowError(ErrorKindFromGrpc(s.error_code()),
                 fmt::format("ps {}: {} (gRPC {})", server, s.error_message(),
                             GrpcCodeName(s.error_code())));
  }
}

}  // namespace cohort::collectives::ps
