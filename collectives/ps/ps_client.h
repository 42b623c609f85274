// The worker's side of one parameter-server shard: its channel, the token every call carries,
// and the checks that the server is up and is the shard the worker's list says it is.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "collectives/ps/ps.grpc.pb.h"

namespace cohort::collectives::ps {

class PsServerClient {
 public:
  using Deadline = std::chrono::system_clock::time_point;

  // A client of shard `shard` of `shards` at address ("host:port"). Does not connect yet.
  // Throws InvalidArgument for a malformed address or a token that gRPC metadata cannot carry.
  PsServerClient(const std::string& address, int shard, int shards, std::string token);

  // Waits until the server accepts connections and answers Hello as the expected shard.
  // Throws Unavailable naming the server when it is not up by the deadline (and `allowed`, the
  // time the caller gave all its servers, or when zero the time this call waited), Unauthenticated
  // when it refuses the token, InvalidArgument when it is another shard.
  void Connect(Deadline deadline, std::chrono::milliseconds allowed = {});

  // Sends a PushPull on ctx (which gets the token and the deadline) and calls done on a gRPC
  // thread. The messages come encoded (PushRequest in, PullReply out), so that a tensor's bytes
  // go out without being copied into a message first. ctx, req and reply must outlive the call.
  void PushPullRaw(grpc::ClientContext* ctx, const grpc::ByteBuffer* req, grpc::ByteBuffer* reply,
                   Deadline deadline, std::function<void(grpc::Status)> done);

  // Sends a unary call of `method` (its full name, "/cohort.ps.PsAsyncService/AsyncPush") with
  // encoded messages on ctx, which the caller gave the token (Authorize) and a deadline; calls
  // done on a gRPC thread. ctx, req and reply must outlive the call.
  void CallRaw(grpc::ClientContext* ctx, const char* method, const grpc::ByteBuffer* req,
               grpc::ByteBuffer* reply, std::function<void(grpc::Status)> done);

  // Starts the Attend call that tells the server while this rank's communicator lives; done is
  // called (on a gRPC thread) when it ends: cancelled through ctx, or the server went away.
  void Attend(grpc::ClientContext* ctx, const ::cohort::ps::AttendRequest* req,
              ::cohort::ps::AttendReply* reply, std::function<void(grpc::Status)> done);

  // Tells the server the job is over (PsService.Finish); whether it now exits. Throws
  // Unauthenticated when it refuses the token, Unavailable when it does not answer by deadline.
  bool Finish(const std::string& run_id, Deadline deadline);

  // For asynchronous mode's calls (async_client.h): the channel, and the token put on a call.
  const std::shared_ptr<grpc::Channel>& Channel() const { return channel_; }
  void Authorize(grpc::ClientContext* ctx) const {
    if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  }

  // "server 127.0.0.1:7001 (shard 1 of 2)": how errors name it.
  const std::string& Name() const { return name_; }
  const std::string& Address() const { return address_; }
  int Shard() const { return shard_; }

 private:
  const std::string address_;
  const int shard_;
  const int shards_;
  const std::string token_;
  const std::string name_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<::cohort::ps::PsService::Stub> stub_;
  std::unique_ptr<grpc::GenericStub> generic_;
};

// COHORT_PS_SERVERS ("host:port,host:port,...") as its addresses, in shard order; empty items
// are skipped.
std::vector<std::string> SplitServerList(const std::string& list);

// Tells every server of `list` that job `run_id` is over (PsServerClient::Finish), all at once,
// each within `timeout`. Returns one line per server that did not take it ("ps server
// 10.0.0.7:29600 (shard 1 of 2): ..."); empty when all did.
std::vector<std::string> FinishServers(const std::string& list, const std::string& token,
                                       const std::string& run_id,
                                       std::chrono::milliseconds timeout);

}  // namespace cohort::collectives::ps
