#include "collectives/store/etcd_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <thread>

#include "collectives/store/etcd_api.h"
#include "collectives/store/etcd_stubs.h"
#include "collectives/store/grpc_status.h"
#include "collectives/store/store_errors.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/net.h"

namespace cohort::collectives {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A call's tries while etcd is unreachable, and the pauses between them (50 ms, doubling).
constexpr int kMaxAttempts = 3;
constexpr auto kFirstPause = std::chrono::milliseconds(50);
// How long etcd has to answer one unary call: fail over within seconds rather than gRPC's
// "never", so a hung etcd is named well inside the launcher's rendezvous timeout.
constexpr auto kCallTimeout = std::chrono::seconds(10);

// Sleeps the next step of a poll (5 ms doubling to 100 ms), never past the deadline.
void PollPause(milliseconds* step, Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  std::this_thread::sleep_for(std::min(*step, std::max(left, milliseconds(0))));
  *step = std::min(*step * 2, milliseconds(100));
}

// Renew the auth token at this age: below etcd's default --auth-token-ttl (300 s).
constexpr auto kTokenRenewal = std::chrono::seconds(100);

// Whether a failed call means "who are you?": auth is on and the call's user is missing or not
// allowed, or its token lapsed (etcd answers INVALID_ARGUMENT "user name is empty",
// PERMISSION_DENIED, UNAUTHENTICATED "invalid auth token").
bool IsAuthRefusal(const grpc::Status& s) {
  const std::string& m = s.error_message();
  return s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
         s.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
         m.find("user name is empty") != std::string::npos ||
         m.find("permission denied") != std::string::npos ||
         m.find("invalid auth token") != std::string::npos;
}

bool IsUnreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE;
}

int64_t ParseCounter(const std::string& key, const std::string& value) {
  try {
    size_t used = 0;
    const int64_t n = std::stoll(value, &used);
    if (used == value.size()) return n;
  } catch (const std::exception&) {
  }
  throw InvalidArgument(fmt::format("Add({}): the key holds '{}', not a decimal integer; use "
                                    "another key for the counter",
                                    QuoteKey(key), value.substr(0, 40)));
}

// Where Add's records go, under the prefix; List leaves them out.
constexpr char kAddRecords[] = ".cohort-adds/";
// The most spent records one Add's txn deletes.
constexpr size_t kSpentPerTxn = 16;

}  // namespace

EtcdStore::EtcdStore(const std::string& endpoint, std::string key_prefix,
                     EtcdCredentials credentials)
    : endpoint_(net::ParseHostPort(endpoint, "the etcd endpoint").ToString()),
      prefix_(std::move(key_prefix)),
      credentials_(std::move(credentials)),
      stubs_(std::make_unique<Stubs>()),
      instance_(RandomHex(8)) {
  UseReleaseAbslMutexes();
  stubs_->channel = grpc::CreateCustomChannel(endpoint_, grpc::InsecureChannelCredentials(),
                                              ClientChannelArguments());
  stubs_->kv = etcd::pb::KV::NewStub(stubs_->channel);
  stubs_->watch = etcd::pb::Watch::NewStub(stubs_->channel);
  stubs_->auth = etcd::pb::Auth::NewStub(stubs_->channel);
}

EtcdStore::~EtcdStore() = default;

std::string EtcdStore::KeyPrefix(const std::string& run_id) { return "cohort/" + run_id + "/"; }

std::string EtcdStore::AuthToken(bool renew) {
  if (credentials_.user.empty()) return "";
  std::lock_guard<std::mutex> lock(auth_mu_);
  const auto now = Clock::now();
  if (renew || auth_token_.empty() || now - auth_time_ > kTokenRenewal) {
    etcd::pb::AuthenticateRequest req;
    req.set_name(credentials_.user);
    req.set_password(credentials_.password);
    etcd::pb::AuthenticateResponse res;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    const grpc::Status s = stubs_->auth->Authenticate(&ctx, req, &res);
    if (IsUnreachable(s) || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      ThrowRefused(s, "authenticate");
    }
    if (!s.ok() || res.token().empty()) {
      throw Unauthenticated(
          fmt::format("etcd at {} refused user '{}' ({}: {}); check COHORT_RDZV_USER and "
                      "COHORT_RDZV_PASSWORD",
                      endpoint_, credentials_.user, GrpcCodeName(s.error_code()),
                      s.ok() ? "its answer carries no token" : s.error_message()));
    }
    auth_token_ = res.token();
    auth_time_ = now;
  }
  return auth_token_;
}

void EtcdStore::Call(const std::string& what, const Rpc& rpc) {
  milliseconds pause = kFirstPause;
  bool renewed = false;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    const std::string token = AuthToken();
    if (!token.empty()) ctx.AddMetadata("token", token);
    const grpc::Status s = rpc(&ctx);
    if (s.ok()) return;
    if (!renewed && !token.empty() &&
        s.error_message().find("invalid auth token") != std::string::npos) {
      renewed = true;  // lapsed (unused for --auth-token-ttl, or etcd restarted): log in again
      AuthToken(/*renew=*/true);
      continue;
    }
    if (!IsUnreachable(s) || attempt >= kMaxAttempts) ThrowRefused(s, what);
    std::this_thread::sleep_for(pause);
    pause *= 2;
  }
}

void EtcdStore::ThrowRefused(const grpc::Status& s, const std::string& what) const {
  if (IsAuthRefusal(s)) {
    throw Unauthenticated(fmt::format(
        "etcd at {} refused {} ({}): {}", endpoint_, what, s.error_message(),
        credentials_.user.empty()
            ? "it has auth enabled; set COHORT_RDZV_USER and COHORT_RDZV_PASSWORD to an etcd user"
            : fmt::format("give user '{}' a role that may read and write the cohort/ keys",
                          credentials_.user)));
  }
  throw Unavailable(fmt::format("etcd at {} refused {} (gRPC {}): {}", endpoint_, what,
                                GrpcCodeName(s.error_code()), s.error_message()));
}

void EtcdStore::Connect(Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  milliseconds step(5);
  for (;;) {
    try {
      std::string ignored;
      TryGet("connect-probe", &ignored);
      return;
    } catch (const Unavailable& e) {
      if (Clock::now() >= deadline) {
        throw Unavailable(fmt::format(
            "cannot reach etcd at {} within {} ms ({}); check --rdzv-endpoint and that etcd "
            "listens there (--listen-client-urls)",
            endpoint_, timeout.count(), e.what()));
      }
    }
    PollPause(&step, deadline);
  }
}

bool EtcdStore::TryGet(const std::string& key, std::string* value, int64_t* revision) {
  etcd::pb::RangeRequest req;
  req.set_key(prefix_ + key);
  etcd::pb::RangeResponse res;
  Call(fmt::format("Get({})", QuoteKey(key)),
       [&](grpc::ClientContext* ctx) { return stubs_->kv->Range(ctx, req, &res); });
  if (revision) *revision = res.header().revision();
  if (res.kvs().empty()) return false;
  *value = res.kvs(0).value();
  return true;
}

void EtcdStore::Set(const std::string& key, const std::string& value) {
  etcd::pb::PutRequest req;
  req.set_key(prefix_ + key);
  req.set_value(value);
  etcd::pb::PutResponse res;
  Call(fmt::format("Set({})", QuoteKey(key)),
       [&](grpc::ClientContext* ctx) { return stubs_->kv->Put(ctx, req, &res); });
}

std::string EtcdStore::Get(const std::string& key, Millis timeout) {
  const auto start = Clock::now();
  std::string value;
  if (Await(key, start + timeout, &value)) return value;
  ThrowGetTimeout("etcd " + endpoint_, key,
                  std::chrono::duration_cast<milliseconds>(Clock::now() - start));
}

etcd::TxnResult EtcdStore::Txn(const etcd::pb::TxnRequest& req, const std::string& what) {
  etcd::pb::TxnResponse res;
  Call(what, [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, req, &res); });
  return etcd::ParsePutIf(res);
}

int64_t EtcdStore::Add(const std::string& key, int64_t delta) {
  // Call sends a txn again when its answer does not come back, which it may not after etcd
  // applied it: this call's record (the sum it put) tells a txn that finds the counter moved
  // whether the move was its own.
  const std::string record =
      fmt::format("{}{}{}/{}-{}", prefix_, kAddRecords, key, instance_, adds_.fetch_add(1));
  std::vector<std::string> spent = TakeSpent();  // deleted by this Add's successful txn
  int64_t sum = 0;
  try {
    sum = AddRecorded(key, delta, record, spent);
  } catch (...) {
    Spent(std::move(spent));  // perhaps not deleted: a later Add deletes them (again)
    throw;
  }
  Spent({record});  // returned: nothing sends its txn again
  return sum;
}

int64_t EtcdStore::AddRecorded(const std::string& key, int64_t delta, const std::string& record,
                               const std::vector<std::string>& spent) {
  const std::string what = fmt::format("Add({})", QuoteKey(key));
  etcd::Condition when;  // first try: the key is absent
  int64_t current = 0;
  for (;;) {
    const int64_t next = current + delta;
    const auto r =
        Txn(etcd::PutIfRecorded(prefix_ + key, when, std::to_string(next), record, spent), what);
    if (r.succeeded) return next;
    if (r.recorded) return ParseCounter(key, *r.recorded);  // applied; its answer was lost
    // Someone else wrote first (or the key existed): retry on what it holds now.
    if (r.current) {
      current = ParseCounter(key, r.current->value);
      when = {etcd::Condition::kModRevision, "", r.current->mod_revision};
    } else {
      current = 0;
      when = {};
    }
  }
}

std::vector<std::string> EtcdStore::TakeSpent() {
  std::lock_guard<std::mutex> lock(spent_mu_);
  std::vector<std::string> taken;
  // A few per txn: etcd refuses a txn of more than 128 operations (--max-txn-ops).
  const size_t n = std::min(spent_.size(), kSpentPerTxn);
  taken.assign(std::make_move_iterator(spent_.end() - static_cast<std::ptrdiff_t>(n)),
               std::make_move_iterator(spent_.end()));
  spent_.resize(spent_.size() - n);
  return taken;
}

void EtcdStore::Spent(std::vector<std::string> records) {
  std::lock_guard<std::mutex> lock(spent_mu_);
  for (auto& r : records) spent_.push_back(std::move(r));
}

std::string EtcdStore::CompareSet(const std::string& key, const std::string& expected,
                                  const std::string& desired) {
  etcd::Condition when;
  if (!expected.empty()) when = {etcd::Condition::kValue, expected, 0};
  const auto r =
      Txn(etcd::PutIf(prefix_ + key, when, desired), fmt::format("CompareSet({})", QuoteKey(key)));
  if (r.succeeded) return desired;
  return r.current ? r.current->value : std::string();
}

bool EtcdStore::Delete(const std::string& key) {
  etcd::pb::DeleteRangeRequest req;
  req.set_key(prefix_ + key);
  etcd::pb::DeleteRangeResponse res;
  Call(fmt::format("Delete({})", QuoteKey(key)),
       [&](grpc::ClientContext* ctx) { return stubs_->kv->DeleteRange(ctx, req, &res); });
  return res.deleted() > 0;
}

// One key after the other: the wait ends when the last one exists, and each is read (and if
// missing watched) once, so N keys cost O(N) requests, not a poll of all N.
void EtcdStore::Wait(const std::vector<std::string>& keys, Millis timeout) {
  const auto start = Clock::now(), deadline = start + timeout;
  std::string ignored;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (Await(keys[i], deadline, &ignored)) continue;
    std::vector<std::string> missing = {keys[i]};
    for (size_t j = i + 1; j < keys.size(); ++j) {
      if (!TryGet(keys[j], &ignored)) missing.push_back(keys[j]);
    }
    ThrowWaitTimeout("etcd " + endpoint_, missing, keys.size(),
                     std::chrono::duration_cast<milliseconds>(Clock::now() - start));
  }
}

std::map<std::string, std::string> EtcdStore::List(const std::string& prefix) {
  const etcd::pb::RangeRequest req = etcd::PrefixRange(prefix_ + prefix);
  etcd::pb::RangeResponse res;
  Call(fmt::format("List({})", QuoteKey(prefix)),
       [&](grpc::ClientContext* ctx) { return stubs_->kv->Range(ctx, req, &res); });
  std::map<std::string, std::string> out;
  for (const auto& kv : res.kvs()) {
    std::string key = kv.key().substr(prefix_.size());
    if (key.compare(0, sizeof(kAddRecords) - 1, kAddRecords) == 0) continue;  // Add's, not ours
    out.emplace(std::move(key), kv.value());
  }
  return out;
}

}  // namespace cohort::collectives
