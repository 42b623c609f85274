#include "collectives/store/grpc_store_server.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string_view>
#include <utility>

#include "collectives/store/grpc_status.h"
#include "collectives/store/store.h"
#include "collectives/store/store.grpc.pb.h"
#include "common/error.h"
#include "common/log.h"
#include "common/net.h"

namespace cohort::collectives {
namespace {

namespace pb = ::cohort::store;
using Clock = std::chrono::steady_clock;

// Runs a handler body, turning a thrown error into the status the client will map back.
template <typename Fn>
grpc::Status Run(Fn&& fn) {
  try {
    fn();
    return grpc::Status::OK;
  } catch (const Error& e) {
    return StatusFromError(e);
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
  }
}

// A Get or Wait: finishes from the table's watch callback, so no thread waits with it. A client
// that goes away (cancel, its own deadline, server shutdown) cancels the watch in OnCancel.
class WatchReactor : public grpc::ServerUnaryReactor {
 public:
  using OnResult = std::function<grpc::Status(KvTable::WatchResult&)>;

  explicit WatchReactor(KvTable* table) : table_(table) {}

  // Must be called from the method handler: gRPC cannot call OnDone (which deletes this) before
  // the handler returns, even when the watch fires at once.
  void Start(std::vector<std::string> keys, std::chrono::milliseconds timeout, OnResult on_result) {
    const auto id = table_->Watch(std::move(keys), KvTable::DeadlineAfter(timeout),
                                  [this, on_result = std::move(on_result)](KvTable::WatchResult r) {
                                    Finish(on_result(r));  // the last use of this
                                  });
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id_ = id;
      cancelled = cancelled_;
    }
    if (cancelled) table_->Cancel(id);
  }

  void OnCancel() override {
    KvTable::WatchId id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      id = id_;
    }
    if (id != 0) table_->Cancel(id);  // finishes with CANCELLED unless the watch already fired
  }

  void OnDone() override { delete this; }

 private:
  KvTable* table_;
  std::mutex mu_;
  KvTable::WatchId id_ = 0;
  bool cancelled_ = false;
};

// The status of a watch that did not complete; DEADLINE_EXCEEDED carries the missing keys.
grpc::Status NotReady(const KvTable::WatchResult& r, Clock::time_point start) {
  if (r.status == KvTable::WatchStatus::kCancelled) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled while waiting");
  }
  pb::MissingKeys details;
  for (const auto& key : r.missing) details.add_keys(key);
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  details.set_waited_ms(waited.count());
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      std::to_string(r.missing.size()) + " keys still missing",
                      details.SerializeAsString());
}

std::chrono::milliseconds Millis(int64_t ms) { return std::chrono::milliseconds(ms); }

// A Wait's or a Join's watch: the reactor finishes OK once every key exists, or at the timeout
// with the missing keys (NotReady).
void FinishWhenAllExist(WatchReactor* reactor, std::vector<std::string> keys, int64_t timeout_ms) {
  const auto start = Clock::now();
  reactor->Start(std::move(keys), Millis(timeout_ms), [start](KvTable::WatchResult& r) {
    return r.status == KvTable::WatchStatus::kReady ? grpc::Status::OK : NotReady(r, start);
  });
}

}  // namespace

class GrpcStoreServer::Impl final : public pb::StoreService::CallbackService {
 public:
  Impl(std::string host, int port, std::string token, std::shared_ptr<KvTable> table)
      : host_(std::move(host)),
        port_(port),
        token_(std::move(token)),
        table_(table ? std::move(table) : std::make_shared<KvTable>()) {}

  void Start() {
    std::lock_guard<std::mutex> lock(mu_);
    if (server_ || stopped_) {
      throw InvalidArgument("GrpcStoreServer::Start called twice; build a new server instead");
    }
    const std::string requested = net::HostPort{host_, port_}.ToString();
    int chosen = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(requested, grpc::InsecureServerCredentials(), &chosen);
    builder.RegisterService(this);
    // gRPC sets SO_REUSEPORT by default, which lets a second store bind the same port silently.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.SetMaxReceiveMessageSize(-1);
    builder.SetMaxSendMessageSize(-1);
    // Clients ping every 10 s during long waits to notice a vanished server; allow it.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    server_ = builder.BuildAndStart();
    if (!server_ || chosen == 0) {
      server_.reset();
      throw Unavailable("the store could not listen on " + requested +
                        ": the port is in use or the host is not an address of this machine; "
                        "pick another port (or 0 for any free one)");
    }
    port_ = chosen;
    COHORT_DEBUG(kStore, "store listening on {} ({})", net::HostPort{host_, port_}.ToString(),
                token_.empty() ? "no token required" : "token required");
  }

  void Shutdown() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!server_) return;
    // A short grace period for calls in progress, then every pending call is cancelled, which
    // cancels its watch (OnCancel) and finishes it; Shutdown returns when all have finished.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
    server_.reset();
    stopped_ = true;
    COHORT_DEBUG(kStore, "store on {} shut down", net::HostPort{host_, port_}.ToString());
  }

  int Port() const {
    std::lock_guard<std::mutex> lock(mu_);
    return server_ || stopped_ ? port_ : 0;
  }

  std::string Address() const { return net::HostPort{host_, Port()}.ToString(); }

  const std::shared_ptr<KvTable>& table() const { return table_; }

  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* ctx, const pb::SetRequest* req,
                                pb::SetResponse*) override {
    return Unary(ctx, "Set", [&] { table_->Set(req->key(), req->value()); });
  }

  grpc::ServerUnaryReactor* Add(grpc::CallbackServerContext* ctx, const pb::AddRequest* req,
                                pb::AddResponse* resp) override {
    return Unary(ctx, "Add", [&] { resp->set_value(table_->Add(req->key(), req->delta())); });
  }

  grpc::ServerUnaryReactor* CompareSet(grpc::CallbackServerContext* ctx,
                                       const pb::CompareSetRequest* req,
                                       pb::CompareSetResponse* resp) override {
    return Unary(ctx, "CompareSet", [&] {
      resp->set_value(table_->CompareSet(req->key(), req->expected(), req->desired()));
    });
  }

  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const pb::DeleteRequest* req,
                                   pb::DeleteResponse* resp) override {
    return Unary(ctx, "Delete", [&] { resp->set_existed(table_->Delete(req->key())); });
  }

  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const pb::ListRequest* req,
                                 pb::ListResponse* resp) override {
    return Unary(ctx, "List", [&] {
      for (auto& [key, value] : table_->List(req->prefix())) {
        auto* entry = resp->add_entries();
        entry->set_key(key);
        entry->set_value(std::move(value));
      }
    });
  }

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const pb::GetRequest* req,
                                pb::GetResponse* resp) override {
    auto* reactor = new WatchReactor(table_.get());
    grpc::Status auth = Authenticate(*ctx, "Get");
    if (!auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    const auto start = Clock::now();
    reactor->Start({req->key()}, Millis(req->timeout_ms()), [resp, start](KvTable::WatchResult& r) {
      if (r.status != KvTable::WatchStatus::kReady) return NotReady(r, start);
      resp->set_value(std::move(r.values.front()));
      return grpc::Status::OK;
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* Wait(grpc::CallbackServerContext* ctx, const pb::WaitRequest* req,
                                 pb::WaitResponse*) override {
    auto* reactor = new WatchReactor(table_.get());
    grpc::Status auth = Authenticate(*ctx, "Wait");
    if (!auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    FinishWhenAllExist(reactor, {req->keys().begin(), req->keys().end()}, req->timeout_ms());
    return reactor;
  }

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* ctx, const pb::JoinRequest* req,
                                 pb::JoinResponse* resp) override {
    auto* reactor = new WatchReactor(table_.get());
    grpc::Status status = Authenticate(*ctx, "Join");
    bool arrived = false;
    if (status.ok()) {
      status = Run([&] {
        arrived = ArriveAt(*table_, req->prefix(), req->rank(), req->size(), req->nonce());
      });
    }
    if (!status.ok() || !arrived || req->arrive_only()) {
      resp->set_duplicate(status.ok() && !arrived);
      reactor->Finish(status);
      return reactor;
    }
    FinishWhenAllExist(reactor, {req->prefix() + "all"}, req->timeout_ms());
    return reactor;
  }

 private:
  template <typename Fn>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, const char* method, Fn&& fn) {
    auto* reactor = ctx->DefaultReactor();
    grpc::Status status = Authenticate(*ctx, method);
    reactor->Finish(status.ok() ? Run(std::forward<Fn>(fn)) : status);
    return reactor;
  }

  grpc::Status Authenticate(const grpc::CallbackServerContext& ctx, const char* method) {
    const char* reason = BearerTokenRefusal(ctx, token_);
    if (reason == nullptr) return grpc::Status::OK;
    // The first refusal is worth a warning; a misconfigured job would repeat it per call.
    if (refusals_.fetch_add(1) == 0) {
      COHORT_WARN(kStore, "store refused a {} call from {}: {} (further refusals at debug level)",
                  method, ctx.peer(), reason);
    } else {
      COHORT_DEBUG(kStore, "store refused a {} call from {}: {}", method, ctx.peer(), reason);
    }
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, reason);
  }

  const std::string host_;
  int port_;
  const std::string token_;
  const std::shared_ptr<KvTable> table_;
  mutable std::mutex mu_;
  std::unique_ptr<grpc::Server> server_;
  bool stopped_ = false;
  std::atomic<uint64_t> refusals_{0};
};

GrpcStoreServer::GrpcStoreServer(std::string host, int port, std::string token,
                                 std::shared_ptr<KvTable> table) {
  UseReleaseAbslMutexes();
  if (port < 0 || port > 65535) {
    throw InvalidArgument("store port " + std::to_string(port) +
                          " is out of range; use 1-65535, or 0 for any free port");
  }
  impl_ = std::make_unique<Impl>(std::move(host), port, std::move(token), std::move(table));
}

GrpcStoreServer::~GrpcStoreServer() { impl_->Shutdown(); }

void GrpcStoreServer::Start() { impl_->Start(); }

void GrpcStoreServer::Shutdown() { impl_->Shutdown(); }

int GrpcStoreServer::Port() const { return impl_->Port(); }

std::string GrpcStoreServer::Address() const { return impl_->Address(); }

const std::shared_ptr<KvTable>& GrpcStoreServer::table() const { return impl_->table(); }

}  // namespace cohort::collectives
