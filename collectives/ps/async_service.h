// The PsAsyncService of one parameter-server shard (ps.proto): asynchronous mode's Init, Push
// and Pull over an AsyncTable. PsServer registers it beside PsService on the same port, and
// passes its token check, so that every call is authenticated the same way. Push and Pull take
// and give raw messages: a push's gradient is read where gRPC received it, and an answer's
// parameters go out from the table's shared copy (AsyncAnswer), neither copied into a message.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>

#include "collectives/ps/async_table.h"
#include "collectives/ps/ps.grpc.pb.h"

namespace cohort::collectives::ps {

using AsyncServiceBase = ::cohort::ps::PsAsyncService::WithCallbackMethod_AsyncInit<
    ::cohort::ps::PsAsyncService::WithRawCallbackMethod_AsyncPush<
        ::cohort::ps::PsAsyncService::WithRawCallbackMethod_AsyncPull<
            ::cohort::ps::PsAsyncService::Service>>>;

class AsyncService final : public AsyncServiceBase {
 public:
  // OK, or the status a call without the right token gets.
  using Authenticator = std::function<grpc::Status(const grpc::CallbackServerContext&)>;

  // Logs every COHORT_PS_LOG_EVERY steps (AsyncTable).
  AsyncService(int shard, Authenticator authenticate);

  grpc::ServerUnaryReactor* AsyncInit(grpc::CallbackServerContext* ctx,
                                      const ::cohort::ps::AsyncInitRequest* req,
                                      ::cohort::ps::AsyncInitReply* reply) override;
  // An AsyncPushRequest in, an AsyncParams out.
  grpc::ServerUnaryReactor* AsyncPush(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* reply) override;
  // An AsyncPullRequest in, an AsyncParams out.
  grpc::ServerUnaryReactor* AsyncPull(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* reply) override;

 private:
  Authenticator authenticate_;
  AsyncTable table_;
};

}  // namespace cohort::collectives::ps
