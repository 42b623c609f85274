#include "collectives/ps/async_service.h"

#include "collectives/ps/wire.h"
#include "common/env.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

// One Push or Pull: waits in the table (holding no thread) until the staleness bound allows.
// A push's gradient stays in the request's slices (kept here) until the table has copied it.
class ParamsReactor final : public grpc::ServerUnaryReactor, public AsyncTable::Waiter {
 public:
  ParamsReactor(AsyncTable* table, grpc::ByteBuffer* reply) : table_(table), reply_(reply) {}

  // Decodes an AsyncPushRequest but its gradient; false when the bytes are not one.
  bool ParsePush(const grpc::ByteBuffer* request) {
    std::string rest;
    if (!request->Dump(&slices_).ok() ||
        !SplitBytesField(slices_, pb::AsyncPushRequest::kGradFieldNumber, &rest, &grad_offset_,
                         &grad_size_) ||
        !push_.ParseFromString(rest)) {
      return false;
    }
    key_ = push_.key();
    return true;
  }
  bool ParsePull(const grpc::ByteBuffer* request) {
    grpc::ByteBuffer copy(*request);  // shares the slices; Deserialize consumes it
    if (!grpc::SerializationTraits<pb::AsyncPullRequest>::Deserialize(&copy, &pull_).ok()) {
      return false;
    }
    key_ = pull_.key();
    return true;
  }
  const pb::AsyncPushRequest& Push() const { return push_; }
  const pb::AsyncPullRequest& Pull() const { return pull_; }
  std::vector<std::string_view> Grad() const { return SpansOf(slices_, grad_offset_, grad_size_); }

  void Applied() override { slices_.clear(); }  // free gRPC's buffers before the answer waits
  void Answer(const grpc::Status& status, AsyncAnswer answer) override {
    slices_.clear();  // refused before it was applied
    if (status.ok()) {
      *reply_ = WithSharedBytesField(answer.head.SerializeAsString(),
                                     pb::AsyncParams::kParamsFieldNumber, std::move(answer.params));
    }
    Finish(status);
  }
  void OnCancel() override {
    if (table_->Abandon(key_, this)) Finish(grpc::Status::CANCELLED);
  }
  void OnDone() override { delete this; }

 private:
  AsyncTable* table_;
  grpc::ByteBuffer* reply_;
  pb::AsyncPushRequest push_;
  pb::AsyncPullRequest pull_;
  pb::AsyncKey key_;
  std::vector<grpc::Slice> slices_;
  size_t grad_offset_ = 0, grad_size_ = 0;
};

grpc::Status NotA(const char* call, const char* message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      std::string(call) + ": the request is not an " + message);
}

}  // namespace

AsyncService::AsyncService(int shard, Authenticator authenticate)
    : authenticate_(std::move(authenticate)), table_(shard, env::kPsLogEvery.Int(1000)) {}

grpc::ServerUnaryReactor* AsyncService::AsyncInit(grpc::CallbackServerContext* ctx,
                                                  const pb::AsyncInitRequest* req,
                                                  pb::AsyncInitReply*) {
  auto* reactor = ctx->DefaultReactor();
  grpc::Status status = authenticate_(*ctx);
  if (status.ok()) status = table_.Init(*req);
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* AsyncService::AsyncPush(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* reply) {
  auto* reactor = new ParamsReactor(&table_, reply);
  if (grpc::Status auth = authenticate_(*ctx); !auth.ok()) {
    reactor->Finish(auth);
  } else if (!reactor->ParsePush(request)) {
    reactor->Finish(NotA("AsyncPush", "AsyncPushRequest"));
  } else {
    table_.Push(reactor->Push(), reactor->Grad(), reactor);
  }
  return reactor;
}

grpc::ServerUnaryReactor* AsyncService::AsyncPull(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* reply) {
  auto* reactor = new ParamsReactor(&table_, reply);
  if (grpc::Status auth = authenticate_(*ctx); !auth.ok()) {
    reactor->Finish(auth);
  } else if (!reactor->ParsePull(request)) {
    reactor->Finish(NotA("AsyncPull", "AsyncPullRequest"));
  } else {
    table_.Pull(reactor->Pull(), reactor);
  }
  return reactor;
}

}  // namespace cohort::collectives::ps
