// EtcdStore::Join: a member's arrival in one etcd txn, for rendezvous of thousands of ranks.
// Store::Join's default counts arrivals with Add, which on etcd is a compare-and-swap loop on one
// key: N ranks arriving together retry O(N) times each, O(N^2) txns in all. Here the txn that
// claims prefix + rank (if it does not exist yet) also counts the members in the same step: a
// count-only range over the rank keys [prefix + "0", prefix + ":"), which in etcd's txn sees the
// put before it. The member whose count reaches size sets prefix + "all"; everyone then polls
// for it as Get does. No counter key, no retries: O(1) requests per rank, plus the polls.
#include <fmt/format.h>

#include "collectives/store/etcd_api.h"
#include "collectives/store/etcd_store.h"
#include "collectives/store/store_errors.h"

namespace cohort::collectives {

bool EtcdStore::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                     Millis timeout) {
  const std::string key = prefix + std::to_string(rank);
  const std::string what = fmt::format("Join({})", QuoteKey(key));
  // The decimal rank keys under prefix ("count" and "all" start with letters).
  const etcd::KeyRange members{prefix_ + prefix + "0", prefix_ + prefix + ":"};
  const auto r = etcd::ParsePutIf(
      Call("txn", etcd::PutIfBody(prefix_ + key, etcd::Condition{}, nonce, members), what));
  int64_t count = r.count;
  if (!r.succeeded) {
    if (!r.current || r.current->value != nonce) return false;  // an earlier group's member
    // Our own put, whose answer was lost and the request retried: count now.
    count = etcd::ParseCount(Call("range", etcd::CountBody(members), what));
  }
  if (count >= size) Set(prefix + "all", "1");
  Get(prefix + "all", timeout);
  return true;
}

}  // namespace cohort::collectives
