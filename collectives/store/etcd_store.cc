#include "collectives/store/etcd_store.h"

#include <fmt/format.h>

#include <thread>

#include "collectives/store/etcd_api.h"
#include "collectives/store/store_errors.h"
#include "common/error.h"
#include "common/http.h"
#include "common/net.h"

namespace cohort::collectives {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

http::Options EtcdHttpOptions() {
  http::Options o;
  o.service = "etcd";
  // A rendezvous call is small: fail over within seconds rather than the default minutes, so a
  // lost etcd is named well inside the launcher's rendezvous timeout.
  o.max_attempts = 3;
  o.backoff_initial_s = 0.05;
  o.backoff_max_s = 0.5;
  o.connect_timeout_s = 3;
  o.stall_timeout_s = 10;
  o.request_timeout_s = 10;
  o.refusal_throws = false;  // Call names the fix: credentials missing, or a role missing
  return o;
}

// Sleeps the next step of a poll (5 ms doubling to 100 ms), never past the deadline.
void PollPause(milliseconds* step, Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  std::this_thread::sleep_for(std::min(*step, std::max(left, milliseconds(0))));
  *step = std::min(*step * 2, milliseconds(100));
}

// Renew the auth token at this age: below etcd's default --auth-token-ttl (300 s).
constexpr auto kTokenRenewal = std::chrono::seconds(100);

// Whether an error answer means "who are you?": auth is on and the call's user is missing or
// not allowed (etcd answers 400 / 403 with these messages).
bool IsAuthRefusal(long status, const std::string& message) {
  return status == 401 || status == 403 ||
         message.find("user name is empty") != std::string::npos ||
         message.find("permission denied") != std::string::npos ||
         message.find("invalid auth token") != std::string::npos;
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

}  // namespace

EtcdStore::EtcdStore(const std::string& endpoint, std::string key_prefix,
                     EtcdCredentials credentials)
    : endpoint_(net::ParseHostPort(endpoint, "the etcd endpoint").ToString()),
      prefix_(std::move(key_prefix)),
      credentials_(std::move(credentials)),
      http_(std::make_unique<http::Client>("http://" + endpoint_, http::Auth::None(),
                                           EtcdHttpOptions())) {}

EtcdStore::~EtcdStore() = default;

std::string EtcdStore::KeyPrefix(const std::string& run_id) { return "cohort/" + run_id + "/"; }

std::string EtcdStore::AuthHeader() {
  if (credentials_.user.empty()) return "";
  std::lock_guard<std::mutex> lock(auth_mu_);
  const auto now = Clock::now();
  if (auth_token_.empty() || now - auth_time_ > kTokenRenewal) {
    http::Request req;
    req.method = "POST";
    req.target = "/v3/auth/authenticate";
    req.headers = {"Content-Type: application/json"};
    const std::string body = etcd::AuthenticateBody(credentials_.user, credentials_.password);
    req.SetBody(body);
    req.what = "authenticate";
    const http::Response res = http_->Send(req);
    if (res.status != 200) {
      throw Unauthenticated(
          fmt::format("etcd at {} refused user '{}' (HTTP {}: {}); check COHORT_RDZV_USER and "
                      "COHORT_RDZV_PASSWORD",
                      endpoint_, credentials_.user, res.status, etcd::ErrorMessage(res.body)));
    }
    auth_token_ = etcd::ParseAuthToken(res.body);
    auth_time_ = now;
  }
  return "Authorization: " + auth_token_;
}

std::string EtcdStore::Call(const std::string& call, const std::string& body,
                            const std::string& what) {
  http::Request req;
  req.method = "POST";
  req.target = "/v3/kv/" + call;
  req.headers = {"Content-Type: application/json"};
  if (std::string auth = AuthHeader(); !auth.empty()) req.headers.push_back(std::move(auth));
  req.SetBody(body);
  req.what = what;
  const http::Response res = http_->Send(req);
  if (res.status != 200) ThrowRefused(res.status, etcd::ErrorMessage(res.body), what);
  return res.body;
}

void EtcdStore::ThrowRefused(long status, const std::string& message,
                             const std::string& what) const {
  if (IsAuthRefusal(status, message)) {
    throw Unauthenticated(fmt::format(
        "etcd at {} refused {} ({}): {}", endpoint_, what, message,
        credentials_.user.empty()
            ? "it has auth enabled; set COHORT_RDZV_USER and COHORT_RDZV_PASSWORD to an etcd user"
            : fmt::format("give user '{}' a role that may read and write the cohort/ keys",
                          credentials_.user)));
  }
  throw Unavailable(fmt::format("etcd at {} refused {} ({}): {}", endpoint_, what,
                                status ? fmt::format("HTTP {}", status) : "in its watch stream",
                                message));
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
  auto kvs = etcd::ParseRange(
      Call("range", etcd::RangeBody(prefix_ + key), fmt::format("Get({})", QuoteKey(key))),
      revision);
  if (kvs.empty()) return false;
  *value = std::move(kvs.front().value);
  return true;
}

void EtcdStore::Set(const std::string& key, const std::string& value) {
  Call("put", etcd::PutBody(prefix_ + key, value), fmt::format("Set({})", QuoteKey(key)));
}

std::string EtcdStore::Get(const std::string& key, Millis timeout) {
  const auto start = Clock::now();
  std::string value;
  if (Await(key, start + timeout, &value)) return value;
  ThrowGetTimeout("etcd " + endpoint_, key,
                  std::chrono::duration_cast<milliseconds>(Clock::now() - start));
}

int64_t EtcdStore::Add(const std::string& key, int64_t delta) {
  const std::string what = fmt::format("Add({})", QuoteKey(key));
  etcd::Condition when;  // first try: the key is absent
  int64_t current = 0;
  for (;;) {
    const int64_t next = current + delta;
    const auto r = etcd::ParsePutIf(
        Call("txn", etcd::PutIfBody(prefix_ + key, when, std::to_string(next)), what));
    if (r.succeeded) return next;
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

std::string EtcdStore::CompareSet(const std::string& key, const std::string& expected,
                                  const std::string& desired) {
  etcd::Condition when;
  if (!expected.empty()) when = {etcd::Condition::kValue, expected, 0};
  const auto r = etcd::ParsePutIf(Call("txn", etcd::PutIfBody(prefix_ + key, when, desired),
                                       fmt::format("CompareSet({})", QuoteKey(key))));
  if (r.succeeded) return desired;
  return r.current ? r.current->value : std::string();
}

bool EtcdStore::Delete(const std::string& key) {
  return etcd::ParseDeleted(Call("deleterange", etcd::DeleteBody(prefix_ + key),
                                 fmt::format("Delete({})", QuoteKey(key))));
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
  std::map<std::string, std::string> out;
  for (auto& kv : etcd::ParseRange(Call("range", etcd::PrefixRangeBody(prefix_ + prefix),
                                        fmt::format("List({})", QuoteKey(prefix))))) {
    out.emplace(kv.key.substr(prefix_.size()), std::move(kv.value));
  }
  return out;
}

}  // namespace cohort::collectives
