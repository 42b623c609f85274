// A Store on etcd (its v3 gRPC API, as etcdctl and etcd's own clients call it: Debian's
// etcd-server 3.4 serves it on the client port), for rendezvous beyond what one launcher-hosted
// store serves, and as torchelastic offers it (`cohort launch --rdzv-backend etcd
// --rdzv-endpoint HOST:2379`). gRPC rather than the JSON gateway on the same port: the gateway
// turns every request into a loopback gRPC call inside etcd, and a watch into a new stream, which
// made it etcd's CPU, not raft, that bounded a rendezvous of thousands of ranks.
//
// Every key is stored under key_prefix ("cohort/<run id>/"), so jobs sharing an etcd never see
// each other's keys; List strips it again. Set, Get, Delete and List are one request each;
// CompareSet is one txn (compare the value, or that the key does not exist, then put; else read);
// Add is a txn loop on the key's mod_revision, so concurrent adds never lose an increment (and
// Join does not use it: see below), and counts once though a txn's answer be lost and the txn
// sent again: each Add's txn also puts a record of its own, "<prefix>.cohort-adds/<key>/<id>"
// (keys List leaves out: the name is reserved), that a txn finding the counter moved reads
// back. A record is needed only until its Add returns (no resend comes after): the next Add's
// successful txn deletes it, so at most the last Add's record (one per thread adding at once)
// outlives a store, not one per Add.
// Get, Wait and Join's wait read the key once and, when it is missing, watch it (a Watch stream)
// from the revision right after that read, so no put in between is missed, and return as the put
// arrives (etcd_watch.cc). A watch that breaks off (etcd restarted, compaction) reads and watches
// again; when etcd cannot be reached then, the call throws Unavailable naming etcd.
// A call that finds etcd unreachable is tried 3 times within ~150 ms; each has 10 s to answer.
// Safe to use from many threads at once (one gRPC channel, whose stubs are thread-safe).
//
// With credentials (an etcd user, as `etcdctl user add` makes them, on an etcd with `auth
// enable`) every call carries the token etcd's Auth.Authenticate returned, in the "token"
// metadata, as etcdctl sends it. The token is renewed every 100 s of its life, below etcd's
// default --auth-token-ttl of 300 s, and at once when etcd calls it invalid (a simple token
// lapses after that long unused).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collectives/store/store.h"

namespace grpc {
class ClientContext;
class Status;
}  // namespace grpc
namespace etcdserverpb {
class TxnRequest;
}

namespace cohort::collectives {
namespace etcd {
struct TxnResult;
}

// An etcd user and password; an empty user: etcd without authentication.
struct EtcdCredentials {
  std::string user;
  std::string password;
};

class EtcdStore : public Store {
 public:
  // endpoint: "host:port" of etcd's client URL (plain http, no TLS). Does not connect yet. Throws
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
  // The same txn, without the wait.
  bool Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) override;

  // The prefix a job's keys go under: "cohort/<run_id>/".
  static std::string KeyPrefix(const std::string& run_id);

 private:
  using Deadline = std::chrono::steady_clock::time_point;
  enum class Watched { kFound, kTimedOut, kResume };  // kResume: ended without it; watch again

  using Rpc = std::function<grpc::Status(grpc::ClientContext*)>;
  struct Stubs;  // the channel's KV, Watch and Auth stubs (etcd_store.cc)

  // Runs one unary call on a context that carries the token and a 10 s deadline, trying again
  // while etcd is unreachable (3 tries) and once with a new token when etcd calls it invalid.
  // Throws ThrowRefused's error when it still fails.
  void Call(const std::string& what, const Rpc& rpc);
  // Arrive's txn; *missing_at: a revision at which "all" did not exist yet (0: unknown). Sets
  // "all" when this arrival completes the group.
  bool ArriveTxn(const std::string& prefix, int rank, int size, const std::string& nonce,
                 int64_t* missing_at);
  // One txn of etcd::PutIf, through Call.
  etcd::TxnResult Txn(const etcdserverpb::TxnRequest& request, const std::string& what);
  // Throws the error for etcd's refusal of `what`: Unauthenticated for a missing or unauthorized
  // user, else Unavailable.
  [[noreturn]] void ThrowRefused(const grpc::Status& status, const std::string& what) const;
  // The key's value if it exists (one range request); *revision: the store's, as read.
  bool TryGet(const std::string& key, std::string* value, int64_t* revision = nullptr);
  // Until deadline: the key's value once it exists; false at the deadline. missing_at: a
  // revision at which the key is known not to exist (then no read first), 0: unknown.
  bool Await(const std::string& key, Deadline deadline, std::string* value, int64_t missing_at = 0);
  // One watch stream of key from revision `from` until its put, the deadline or the stream's end.
  Watched WatchOnce(const std::string& key, int64_t from, Deadline deadline, std::string* value);
  // The token the calls carry, authenticating first when it is missing or old (or `renew`); ""
  // without credentials. Throws Unauthenticated when etcd refuses them.
  std::string AuthToken(bool renew = false);
  // Add's txn loop, with its record and the spent records its success deletes.
  int64_t AddRecorded(const std::string& key, int64_t delta, const std::string& record,
                      const std::vector<std::string>& spent);
  // Add's records: up to kSpentPerTxn of those no resend can need any more, taken for deletion
  // by the next Add's txn; Spent() gives records (back) for a later one.
  std::vector<std::string> TakeSpent();
  void Spent(std::vector<std::string> records);

  std::string endpoint_;
  std::string prefix_;
  EtcdCredentials credentials_;
  std::unique_ptr<Stubs> stubs_;
  std::mutex auth_mu_;
  std::string auth_token_;  // guarded by auth_mu_
  std::chrono::steady_clock::time_point auth_time_;
  const std::string instance_;     // random, for the records of this store's adds
  std::atomic<uint64_t> adds_{0};  // this store's adds so far
  std::mutex spent_mu_;
  std::vector<std::string> spent_;  // records of returned Adds, not yet deleted (spent_mu_)
};

}  // namespace cohort::collectives
