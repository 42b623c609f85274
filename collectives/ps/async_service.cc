#include "collectives/ps/async_service.h"

#include "common/env.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

// One Push or Pull: waits in the table (holding no thread) until the staleness bound allows.
class ParamsReactor final : public grpc::ServerUnaryReactor, public AsyncTable::Waiter {
 public:
  ParamsReactor(AsyncTable* table, const pb::AsyncKey& key, pb::AsyncParams* reply)
      : table_(table), key_(key), reply_(reply) {}

  void Answer(const grpc::Status& status, pb::AsyncParams reply) override {
    if (status.ok()) *reply_ = std::move(reply);
    Finish(status);
  }
  void OnCancel() override {
    if (table_->Abandon(key_, this)) Finish(grpc::Status::CANCELLED);
  }
  void OnDone() override { delete this; }

 private:
  AsyncTable* table_;
  const pb::AsyncKey key_;
  pb::AsyncParams* reply_;
};

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
                                                  const pb::AsyncPushRequest* req,
                                                  pb::AsyncParams* reply) {
  auto* reactor = new ParamsReactor(&table_, req->key(), reply);
  if (grpc::Status auth = authenticate_(*ctx); !auth.ok()) {
    reactor->Finish(auth);
  } else {
    table_.Push(*req, reactor);
  }
  return reactor;
}

grpc::ServerUnaryReactor* AsyncService::AsyncPull(grpc::CallbackServerContext* ctx,
                                                  const pb::AsyncPullRequest* req,
                                                  pb::AsyncParams* reply) {
  auto* reactor = new ParamsReactor(&table_, req->key(), reply);
  if (grpc::Status auth = authenticate_(*ctx); !auth.ok()) {
    reactor->Finish(auth);
  } else {
    table_.Pull(*req, reactor);
  }
  return reactor;
}

}  // namespace cohort::collectives::ps
