#include "collectives/store/grpc_store_client.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "collectives/store/grpc_status.h"
#include "collectives/store/store.grpc.pb.h"
#include "collectives/store/store_errors.h"
#include "common/error.h"
#include "common/log.h"
#include "common/net.h"

namespace cohort::collectives {
namespace {

namespace pb = ::cohort::store;
using SystemClock = std::chrono::system_clock;
using Millis = Store::Millis;

// Extra time a waiting call's gRPC deadline allows past the store-side timeout, so that the
// server's answer (which names the missing keys) arrives before the client gives up.
constexpr Millis kWaitGrace{5000};
// The least time a call that does not wait may take.
constexpr Millis kMinCallTimeout{10000};

// now + d, saturating instead of overflowing for huge timeouts.
SystemClock::time_point DeadlineAfter(Millis d) {
  const auto now = SystemClock::now();
  if (d > std::chrono::hours(24 * 365 * 100)) return SystemClock::time_point::max();
  return now + std::max(d, Millis(0));
}

std::string Seconds(std::chrono::steady_clock::duration d) {
  return fmt::format("{:.1f} s", std::chrono::duration<double>(d).count());
}

pb::JoinRequest JoinRequest(const std::string& prefix, int rank, int size,
                            const std::string& nonce) {
  pb::JoinRequest req;
  req.set_prefix(prefix);
  req.set_rank(rank);
  req.set_size(size);
  req.set_nonce(nonce);
  return req;
}

}  // namespace

class GrpcStoreClient::Impl {
 public:
  Impl(std::string address, std::string token, Millis connect_timeout)
      : address_(net::ParseHostPort(address, "the store address").ToString()),
        token_(std::move(token)),
        connect_timeout_(connect_timeout),
        call_timeout_(std::max(connect_timeout, kMinCallTimeout)) {
    UseReleaseAbslMutexes();
    for (unsigned char c : token_) {
      if (c < 0x20 || c > 0x7e) {
        throw InvalidArgument(
            "COHORT_TOKEN holds a byte that is not printable ASCII; gRPC metadata cannot carry "
            "it: use letters, digits and punctuation only (e.g. `openssl rand -hex 16`)");
      }
    }
    const grpc::ChannelArguments args = ClientChannelArguments();
    channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
    stub_ = pb::StoreService::NewStub(channel_);
  }

  void Connect() {
    if (connected_.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> lock(connect_mu_);
    if (connected_.load(std::memory_order_relaxed)) return;
    const auto start = std::chrono::steady_clock::now();
    if (!channel_->WaitForConnected(DeadlineAfter(connect_timeout_))) {
      throw Unavailable(fmt::format(
          "could not reach the store at {} (tried for {}): is `cohort store` or the launcher on "
          "node 0 (or rank 0 when no launcher runs) up, and does COHORT_STORE name its "
          "host:port? COHORT_STORE_TIMEOUT sets how long to try",
          address_, Seconds(std::chrono::steady_clock::now() - start)));
    }
    COHORT_DEBUG(kStore, "connected to the store at {} in {}", address_,
                 Seconds(std::chrono::steady_clock::now() - start));
    connected_.store(true, std::memory_order_release);
  }

  // Runs one call on a fresh context carrying the token; returns its status.
  template <typename Fn>
  grpc::Status Call(SystemClock::time_point deadline, Fn&& fn) {
    Connect();
    grpc::ClientContext ctx;
    if (!token_.empty()) ctx.AddMetadata("authorization", "Bearer " + token_);
    ctx.set_deadline(deadline);
    return fn(&ctx);
  }

  SystemClock::time_point CallDeadline() const { return DeadlineAfter(call_timeout_); }

  SystemClock::time_point WaitDeadline(Millis timeout) const {
    if (timeout > std::chrono::hours(24 * 365)) return DeadlineAfter(timeout);  // no overflow
    return DeadlineAfter(std::max(timeout, Millis(0)) + kWaitGrace);
  }

  // What a failed call was waiting for: the keys of a Get (is_get) or a Wait, and how long the
  // store was asked to wait.
  struct Waited {
    const std::vector<std::string>& keys;
    Millis timeout;
    bool is_get;
  };

  // Throws the typed error for a failed call `op` (e.g. "Set('k')").
  [[noreturn]] void Fail(const grpc::Status& s, const std::string& op,
                         const Waited* waited = nullptr) const {
    switch (s.error_code()) {
      case grpc::StatusCode::UNAUTHENTICATED:
        if (token_.empty()) {
          throw Unauthenticated(fmt::format(
              "store at {} requires a token and {} sent none: set COHORT_TOKEN to the store's "
              "token",
              address_, op));
        }
        throw Unauthenticated(
            fmt::format("store at {} refused the token: COHORT_TOKEN differs from the store's ({})",
                        address_, op));
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        if (waited != nullptr) ThrowWaitFailure(s, *waited);
        throw Timeout(fmt::format("store at {} did not answer {} within {}: is it overloaded?",
                                  address_, op, Seconds(call_timeout_)));
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::CANCELLED:
        throw Unavailable(fmt::format(
            "lost the store at {} during {}: {} ({}); did the process hosting it (`cohort store`, "
            "the launcher on node 0, or rank 0) exit?",
            address_, op, s.error_message(), GrpcCodeName(s.error_code())));
      case grpc::StatusCode::INVALID_ARGUMENT:
        // The server's message is already a complete sentence about the caller's input.
        throw InvalidArgument(fmt::format("{} (store at {})", s.error_message(), address_));
      default:
        CheckGrpc(s, fmt::format("{} on the store at {}", op, address_));
    }
    throw Internal("unreachable: CheckGrpc returned for a failed status");
  }

  const std::string address_;
  const std::string token_;
  const Millis connect_timeout_;
  const Millis call_timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::StoreService::Stub> stub_;

 private:
  // DEADLINE_EXCEEDED of a Get or Wait: the server's details name the missing keys.
  [[noreturn]] void ThrowWaitFailure(const grpc::Status& s, const Waited& w) const {
    pb::MissingKeys details;
    std::vector<std::string> missing = w.keys;  // when the client's own deadline fired first
    Millis waited = std::max(w.timeout, Millis(0));
    if (!s.error_details().empty() && details.ParseFromString(s.error_details())) {
      missing.assign(details.keys().begin(), details.keys().end());
      waited = Millis(details.waited_ms());
    }
    const std::string where = "store at " + address_;
    if (w.is_get) ThrowGetTimeout(where, w.keys.front(), waited);
    ThrowWaitTimeout(where, missing, w.keys.size(), waited);
  }

  std::mutex connect_mu_;
  std::atomic<bool> connected_{false};
};

GrpcStoreClient::GrpcStoreClient(std::string address, std::string token, Millis connect_timeout)
    : impl_(std::make_unique<Impl>(std::move(address), std::move(token), connect_timeout)) {}

GrpcStoreClient::~GrpcStoreClient() = default;

void GrpcStoreClient::Connect() { impl_->Connect(); }

const std::string& GrpcStoreClient::address() const { return impl_->address_; }

void GrpcStoreClient::Set(const std::string& key, const std::string& value) {
  pb::SetRequest req;
  req.set_key(key);
  req.set_value(value);
  pb::SetResponse resp;
  auto s = impl_->Call(impl_->CallDeadline(),
                       [&](grpc::ClientContext* c) { return impl_->stub_->Set(c, req, &resp); });
  if (!s.ok()) impl_->Fail(s, "Set(" + QuoteKey(key) + ")");
}

std::string GrpcStoreClient::Get(const std::string& key, Millis timeout) {
  pb::GetRequest req;
  req.set_key(key);
  req.set_timeout_ms(std::max<int64_t>(timeout.count(), 0));
  pb::GetResponse resp;
  auto s = impl_->Call(impl_->WaitDeadline(timeout),
                       [&](grpc::ClientContext* c) { return impl_->stub_->Get(c, req, &resp); });
  if (!s.ok()) {
    const std::vector<std::string> keys = {key};
    const Impl::Waited waited{keys, timeout, /*is_get=*/true};
    impl_->Fail(s, "Get(" + QuoteKey(key) + ")", &waited);
  }
  return std::move(*resp.mutable_value());
}

int64_t GrpcStoreClient::Add(const std::string& key, int64_t delta) {
  pb::AddRequest req;
  req.set_key(key);
  req.set_delta(delta);
  pb::AddResponse resp;
  auto s = impl_->Call(impl_->CallDeadline(),
                       [&](grpc::ClientContext* c) { return impl_->stub_->Add(c, req, &resp); });
  if (!s.ok()) impl_->Fail(s, "Add(" + QuoteKey(key) + ")");
  return resp.value();
}

std::string GrpcStoreClient::CompareSet(const std::string& key, const std::string& expected,
                                        const std::string& desired) {
  pb::CompareSetRequest req;
  req.set_key(key);
  req.set_expected(expected);
  req.set_desired(desired);
  pb::CompareSetResponse resp;
  auto s = impl_->Call(impl_->CallDeadline(), [&](grpc::ClientContext* c) {
    return impl_->stub_->CompareSet(c, req, &resp);
  });
  if (!s.ok()) impl_->Fail(s, "CompareSet(" + QuoteKey(key) + ")");
  return std::move(*resp.mutable_value());
}

bool GrpcStoreClient::Delete(const std::string& key) {
  pb::DeleteRequest req;
  req.set_key(key);
  pb::DeleteResponse resp;
  auto s = impl_->Call(impl_->CallDeadline(),
                       [&](grpc::ClientContext* c) { return impl_->stub_->Delete(c, req, &resp); });
  if (!s.ok()) impl_->Fail(s, "Delete(" + QuoteKey(key) + ")");
  return resp.existed();
}

void GrpcStoreClient::Wait(const std::vector<std::string>& keys, Millis timeout) {
  pb::WaitRequest req;
  for (const auto& key : keys) req.add_keys(key);
  req.set_timeout_ms(std::max<int64_t>(timeout.count(), 0));
  pb::WaitResponse resp;
  auto s = impl_->Call(impl_->WaitDeadline(timeout),
                       [&](grpc::ClientContext* c) { return impl_->stub_->Wait(c, req, &resp); });
  if (!s.ok()) {
    const Impl::Waited waited{keys, timeout, /*is_get=*/false};
    impl_->Fail(s, "Wait(" + QuoteKeys(keys) + ")", &waited);
  }
}

std::map<std::string, std::string> GrpcStoreClient::List(const std::string& prefix) {
  pb::ListRequest req;
  req.set_prefix(prefix);
  pb::ListResponse resp;
  auto s = impl_->Call(impl_->CallDeadline(),
                       [&](grpc::ClientContext* c) { return impl_->stub_->List(c, req, &resp); });
  if (!s.ok()) impl_->Fail(s, "List(" + QuoteKey(prefix) + ")");
  std::map<std::string, std::string> out;
  for (auto& entry : *resp.mutable_entries()) {
    out.emplace_hint(out.end(), std::move(*entry.mutable_key()), std::move(*entry.mutable_value()));
  }
  return out;
}

bool GrpcStoreClient::Join(const std::string& prefix, int rank, int size,
                           const std::string& nonce, Millis timeout) {
  pb::JoinRequest req = JoinRequest(prefix, rank, size, nonce);
  req.set_timeout_ms(std::max<int64_t>(timeout.count(), 0));
  pb::JoinResponse resp;
  auto s = impl_->Call(impl_->WaitDeadline(timeout),
                       [&](grpc::ClientContext* c) { return impl_->stub_->Join(c, req, &resp); });
  if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return Store::Join(prefix, rank, size, nonce, timeout);
  }
  if (!s.ok()) {
    const std::vector<std::string> keys = {prefix + "all"};
    const Impl::Waited waited{keys, timeout, /*is_get=*/true};
    impl_->Fail(s, "Join(" + QuoteKey(prefix) + ")", &waited);
  }
  return !resp.duplicate();
}

bool GrpcStoreClient::Arrive(const std::string& prefix, int rank, int size,
                             const std::string& nonce) {
  pb::JoinRequest req = JoinRequest(prefix, rank, size, nonce);
  req.set_arrive_only(true);
  pb::JoinResponse resp;
  auto s = impl_->Call(impl_->CallDeadline(),
                       [&](grpc::ClientContext* c) { return impl_->stub_->Join(c, req, &resp); });
  if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return Store::Arrive(prefix, rank, size, nonce);
  }
  if (!s.ok()) impl_->Fail(s, "Arrive(" + QuoteKey(prefix) + ")", nullptr);
  return !resp.duplicate();
}

}  // namespace cohort::collectives
