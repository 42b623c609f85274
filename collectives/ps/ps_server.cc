#include "collectives/ps/ps_server.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <mutex>
#include <string_view>

#include "collectives/ps/async_service.h"
#include "collectives/ps/ps.grpc.pb.h"
#include "collectives/ps/push_table.h"
#include "collectives/ps/wire.h"
#include "collectives/store/grpc_status.h"
#include "common/error.h"
#include "common/log.h"
#include "common/net.h"

namespace cohort::collectives::ps {
namespace {

namespace pb = ::cohort::ps;

// One PushPull call: waits in the table (holding no thread) until its round is answered. It
// takes the raw messages: the push's data stays in gRPC's receive buffers until the round is
// combined (only the other fields are parsed), and every rank's answer shares the one combined
// result (an encoded PullReply whose data is that result), instead of a copy per rank.
class PushReactor final : public grpc::ServerUnaryReactor, public PushTable::Waiter {
 public:
  PushReactor(PushTable* table, grpc::ByteBuffer* reply) : table_(table), reply_(reply) {}

  // Decodes the request but its data; false when it is not a PushRequest.
  bool Parse(const grpc::ByteBuffer* request) {
    if (!request->Dump(&slices_).ok()) return false;
    std::string rest;
    return SplitBytesField(slices_, kDataField, &rest, &data_offset_, &data_size_) &&
           req_.ParseFromString(rest);
  }

  const pb::PushRequest& Request() const override { return req_; }
  std::vector<std::string_view> Data() const override {
    return SpansOf(slices_, data_offset_, data_size_);
  }
  size_t DataSize() const override { return data_size_; }
  void Answer(const grpc::Status& status, std::shared_ptr<const std::string> result) override {
    if (status.ok()) *reply_ = WithSharedBytesField("", 1, std::move(result));
    Finish(status);
  }
  void OnCancel() override { table_->Abandon(this); }
  void OnDone() override { delete this; }

 private:
  static constexpr int kDataField = pb::PushRequest::kDataFieldNumber;
  PushTable* table_;
  pb::PushRequest req_;
  std::vector<grpc::Slice> slices_;  // the request as received; data_ bytes of it are the data
  size_t data_offset_ = 0, data_size_ = 0;
  grpc::ByteBuffer* reply_;
};

using Service = pb::PsService::WithCallbackMethod_Hello<
    pb::PsService::WithRawCallbackMethod_PushPull<pb::PsService::WithCallbackMethod_Attend<
        pb::PsService::WithCallbackMethod_Finish<pb::PsService::Service>>>>;

// One Attend call: open until the rank's communicator ends; then its scope is failed.
class AttendReactor final : public grpc::ServerUnaryReactor {
 public:
  AttendReactor(PushTable* table, const pb::AttendRequest* req) : table_(table), req_(req) {}
  void OnCancel() override {
    table_->Left(req_->scope(), req_->rank());
    Finish(grpc::Status::CANCELLED);
  }
  void OnDone() override { delete this; }

 private:
  PushTable* table_;
  const pb::AttendRequest* req_;
};

}  // namespace

class PsServer::Impl final : public Service {
 public:
  Impl(std::string host, int port, std::string token, int shard, int shards)
      : host_(std::move(host)),
        port_(port),
        token_(std::move(token)),
        shard_(shard),
        shards_(shards),
        async_(shard, [this](const grpc::CallbackServerContext& ctx) { return Authenticate(ctx); }) {}

  void Start() {
    std::lock_guard<std::mutex> lock(mu_);
    if (server_ || stopped_) throw InvalidArgument("PsServer::Start called twice");
    const std::string requested = net::HostPort{host_, port_}.ToString();
    int chosen = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(requested, grpc::InsecureServerCredentials(), &chosen);
    builder.RegisterService(this);
    builder.RegisterService(&async_);  // asynchronous mode, same port and token
    // Without this a second server could bind the same port silently (SO_REUSEPORT).
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.SetMaxReceiveMessageSize(-1);
    builder.SetMaxSendMessageSize(-1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 16 << 20);
    // Workers ping to notice a vanished server (and it, a vanished worker); allow it.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    server_ = builder.BuildAndStart();
    if (!server_ || chosen == 0) {
      server_.reset();
      throw Unavailable(fmt::format(
          "ps-server shard {} could not listen on {}: the port is in use or the host is not an "
          "address of this machine; pick another --port (or 0 for any free one)",
          shard_, requested));
    }
    port_ = chosen;
  }

  void Shutdown() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!server_) return;
    // Pending pushes are cancelled (OnCancel fails their rounds) and answered.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
    server_.reset();
    stopped_ = true;
  }

  int Port() const {
    std::lock_guard<std::mutex> lock(mu_);
    return server_ || stopped_ ? port_ : 0;
  }

  std::string Address() const { return net::HostPort{host_, Port()}.ToString(); }

  grpc::ServerUnaryReactor* Hello(grpc::CallbackServerContext* ctx, const pb::HelloRequest*,
                                  pb::HelloReply* reply) override {
    auto* reactor = ctx->DefaultReactor();
    grpc::Status auth = Authenticate(*ctx);
    if (auth.ok()) {
      reply->set_shard(shard_);
      reply->set_shards(shards_);
    }
    reactor->Finish(auth);
    return reactor;
  }

  grpc::ServerUnaryReactor* Attend(grpc::CallbackServerContext* ctx, const pb::AttendRequest* req,
                                   pb::AttendReply*) override {
    grpc::Status auth = Authenticate(*ctx);
    if (!auth.ok()) {
      auto* reactor = ctx->DefaultReactor();
      reactor->Finish(auth);
      return reactor;
    }
    return new AttendReactor(&table_, req);  // finishes when the call is cancelled
  }

  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, const pb::FinishRequest* req,
                                   pb::FinishReply* reply) override {
    auto* reactor = ctx->DefaultReactor();
    grpc::Status auth = Authenticate(*ctx);
    const bool exits = auth.ok() && on_finish_ && !finishing_.exchange(true);
    if (auth.ok()) reply->set_exits(on_finish_ != nullptr);
    const std::string run_id = req->run_id();  // req goes with the call once answered
    reactor->Finish(auth);
    if (exits) on_finish_(run_id);
    return reactor;
  }

  void SetOnFinish(std::function<void(const std::string&)> handler) {
    on_finish_ = std::move(handler);
  }

  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* ctx,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* reply) override {
    auto* reactor = new PushReactor(&table_, reply);
    grpc::Status auth = Authenticate(*ctx);
    if (!auth.ok()) {
      reactor->Finish(auth);
    } else if (!reactor->Parse(request)) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "PushPull: the request is not a PushRequest"));
    } else {
      table_.Push(reactor);
    }
    return reactor;
  }

 private:
  grpc::Status Authenticate(const grpc::CallbackServerContext& ctx) {
    const char* reason = BearerTokenRefusal(ctx, token_);
    if (reason == nullptr) return grpc::Status::OK;
    if (refusals_.fetch_add(1) == 0) {
      COHORT_WARN(kColl,
                  "ps-server shard {} refused a call from {}: {} (further refusals at "
                  "debug level)",
                  shard_, ctx.peer(), reason);
    }
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        fmt::format("ps-server shard {}: {}", shard_, reason));
  }

  const std::string host_;
  int port_;
  const std::string token_;
  const int shard_;
  const int shards_;
  PushTable table_;
  AsyncService async_;
  mutable std::mutex mu_;
  std::unique_ptr<grpc::Server> server_;
  bool stopped_ = false;
  std::atomic<uint64_t> refusals_{0};
  std::function<void(const std::string&)> on_finish_;  // set before Start, then only read
  std::atomic<bool> finishing_{false};
};

PsServer::PsServer(std::string host, int port, std::string token, int shard, int shards) {
  UseReleaseAbslMutexes();
  if (port < 0 || port > 65535) {
    throw InvalidArgument(fmt::format(
        "ps-server port {} is out of range; use 1-65535, or 0 for any free port", port));
  }
  if (shards < 1 || shard < 0 || shard >= shards) {
    throw InvalidArgument(fmt::format(
        "ps-server --shard {} --shards {}: shards must be >= 1 and the shard in 0..shards-1", shard,
        shards));
  }
  impl_ = std::make_unique<Impl>(std::move(host), port, std::move(token), shard, shards);
}

PsServer::~PsServer() { impl_->Shutdown(); }
void PsServer::OnFinish(std::function<void(const std::string&)> handler) {
  impl_->SetOnFinish(std::move(handler));
}
void PsServer::Start() { impl_->Start(); }
void PsServer::Shutdown() { impl_->Shutdown(); }
int PsServer::Port() const { return impl_->Port(); }
std::string PsServer::Address() const { return impl_->Address(); }

}  // namespace cohort::collectives::ps
