// EtcdStore::Arrive and Join: a member's arrival in one etcd txn, for rendezvous of thousands of
// ranks. Store's default counts arrivals with Add, which on etcd is a compare-and-swap loop on
// one key: N ranks arriving together retry O(N) times each, O(N^2) txns in all. Here the txn
// that claims prefix + rank (if it does not exist yet) also puts a tally key and reads back its
// previous version: the number of members that arrived before (etcd_api.h, PutIf). The member
// whose count reaches size sets prefix + "all". Join then waits for it: a watch from the txn's
// revision on, with no read of "all" first, because only a member that counted size sets it
// and counts only grow (nothing deletes join keys), so "all" did not exist when a smaller count
// was read. (A caller that sets "all" otherwise, to wake the members with an error, reads it
// itself first: the launchers' rendezvous does.) No counter key, no retries: two requests per
// rank (the txn and the watch), and one Set by the last.
#include <fmt/format.h>

#include "collectives/store/etcd_api.h"
#include "collectives/store/etcd_stubs.h"
#include "collectives/store/store_errors.h"

namespace cohort::collectives {

bool EtcdStore::ArriveTxn(const std::string& prefix, int rank, int size, const std::string& nonce,
                          int64_t* missing_at) {
  const std::string key = prefix + std::to_string(rank);
  const std::string what = fmt::format("Join({})", QuoteKey(key));
  const std::string tally = prefix + "tally";
  const auto r = Txn(etcd::PutIf(prefix_ + key, etcd::Condition{}, nonce, prefix_ + tally), what);
  int64_t count = r.count;
  *missing_at = r.revision;
  if (!r.succeeded) {
    if (!r.current || r.current->value != nonce) return false;  // an earlier group's member
    // Our own put, whose answer was lost and the request retried: count now (the tally's
    // version: every member's successful txn so far, ours too).
    etcd::pb::RangeRequest req;
    req.set_key(prefix_ + tally);
    etcd::pb::RangeResponse res;
    Call(what, [&](grpc::ClientContext* ctx) { return stubs_->kv->Range(ctx, req, &res); });
    count = res.kvs().empty() ? 0 : res.kvs(0).version();
    *missing_at = 0;  // read "all" first
  }
  if (count >= size) Set(prefix + "all", "1");
  return true;
}

bool EtcdStore::Arrive(const std::string& prefix, int rank, int size, const std::string& nonce) {
  int64_t ignored = 0;
  return ArriveTxn(prefix, rank, size, nonce, &ignored);
}

bool EtcdStore::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                     Millis timeout) {
  const auto start = std::chrono::steady_clock::now();
  int64_t missing_at = 0;
  if (!ArriveTxn(prefix, rank, size, nonce, &missing_at)) return false;
  std::string ignored;
  if (!Await(prefix + "all", start + timeout, &ignored, missing_at)) {
    ThrowGetTimeout("etcd " + endpoint_, prefix + "all",
                    std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start));
  }
  return true;
}

}  // namespace cohort::collectives
