// A Store on etcd (v3 API, through its JSON gateway: Debian's etcd-server 3.4 serves it on the
// client port), for rendezvous beyond what one launcher-hosted store serves, and as torchelastic
// offers it (`cohort launch --rdzv-backend etcd --rdzv-endpoint HOST:2379`).
//
// Every key is stored under key_prefix ("cohort/<run id>/"), so jobs sharing an etcd never see
// each other's keys; List strips it again. Set, Get, Delete and List are one request each;
// CompareSet is one txn (compare the value, or that the key does not exist, then put; else read);
// Add is a txn loop on the key's mod_revision, so concurrent adds never lose an increment (and
// Join does not use it: see below).
// Get, Wait and Join's wait read the key once and, when it is missing, watch it (the gateway's
// /v3/watch stream, read by http::Client::Stream) from the revision right after that read, so no
// put in between is missed, and return as the put arrives (etcd_watch.cc). A watch that breaks
// off (etcd restarted, compaction) reads and watches again; when etcd cannot be reached then,
// the call throws Unavailable naming etcd.
// Safe to use from many threads at once (http::Client pools its connections).
//
// With credentials (an etcd user, as `etcdctl user add` makes them, on an etcd with `auth
// enable`) every call carries the token etcd's /v3/auth/authenticate returned, in the
// Authorization header, as etcdctl and torchelastic send it. The token is renewed every 100 s of
// its life, below etcd's default --auth-token-ttl of 300 s (a simple token lapses after that long
// unused; the gateway then hangs the call instead of refusing it).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "collectives/store/store.h"

namespace cohort::http {
class Client;
}

namespace cohort::collectives {

// An etcd user and password; an empty user: etcd without authentication.
struct EtcdCredentials {
  std::string user;
  std::string password;
};

class EtcdStore : public Store {
 public:
  // endpoint: "host:port" of etcd's client URL (http). Does not connect yet. Throws
  // InvalidArgument for a malformed endpoint.
  EtcdStore(const std::string& endpoint, std::string key_prefix, EtcdCredentials credentials = {});
  ~EtcdStore() override;

  // Waits up to timeout until etcd answers. Throws Unavailable naming the endpoint and the wait,
  // Unauthenticated at once when etcd refuses the credentials or wants some and has none.
  void Connect(Millis timeout);

  // Every operation throws Unavailable when etcd cannot be reached (naming the endpoint),
  // Timeout from Get and Wait naming the keys still missing, InvalidArgument from Add when the
  // key holds something that is not a decimal integer.
  void Set(const std::string& key, const std::string& value) override;
  std::string Get(const std::string& key, Millis timeout) override;
  int64_t Add(const std::string& key, int64_t delta) override;
  std::string CompareSet(const std::string& key, const std::string& expected,
                         const std::string& desired) override;
  bool Delete(const std::string& key) override;
  void Wait(const std::vector<std::string>& keys, Millis timeout) override;
  std::map<std::string, std::string> List(const std::string& prefix) override;
  // One txn claims the rank's key and counts the members (etcd_join.cc): no counter key, so no
  // compare-and-swap retries when thousands arrive at once; then watches "all" from the txn's
  // revision on (no read of it first).
  bool Join(const std::string& prefix, int rank, int size, const std::string& nonce,
            Millis timeout) override;

  // The prefix a job's keys go under: "cohort/<run_id>/".
  static std::string KeyPrefix(const std::string& run_id);

 private:
  using Deadline = std::chrono::steady_clock::time_point;
  enum class Watched { kFound, kTimedOut, kResume };  // kResume: ended without it; watch again

  // POSTs body to /v3/kv/<call>; returns the answer's body. Throws Unavailable on an error answer.
  std::string Call(const std::string& call, const std::string& body, const std::string& what);
  // Throws the error for etcd's refusal of `what` (status 0: an error inside a watch stream):
  // Unauthenticated for a missing or unauthorized user, else Unavailable.
  [[noreturn]] void ThrowRefused(long status, const std::string& message,
                                 const std::string& what) const;
  // The key's value if it exists (one range request); *revision: the store's, as read.
  bool TryGet(const std::string& key, std::string* value, int64_t* revision = nullptr);
  // Until deadline: the key's value once it exists; false at the deadline. missing_at: a
  // revision at which the key is known not to exist (then no read first), 0: unknown.
  bool Await(const std::string& key, Deadline deadline, std::string* value, int64_t missing_at = 0);
  // One watch stream of key from revision `from` until its put, the deadline or the stream's end.
  Watched WatchOnce(const std::string& key, int64_t from, Deadline deadline, std::string* value);
  // "Authorization: <token>", authenticating first when the token is missing or old; "" without
  // credentials. Throws Unauthenticated when etcd refuses them.
  std::string AuthHeader();

  std::string endpoint_;
  std::string prefix_;
  EtcdCredentials credentials_;
  std::unique_ptr<http::Client> http_;
  std::mutex auth_mu_;
  std::string auth_token_;  // guarded by auth_mu_
  std::chrono::steady_clock::time_point auth_time_;
};

}  // namespace cohort::collectives
