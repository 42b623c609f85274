// EtcdStore::Join: a member's arrival in one etcd txn, for rendezvous of thousands of ranks.
// Store::Join's default counts arrivals with Add, which on etcd is a compare-and-swap loop on one
// key: N ranks arriving together retry O(N) times each, O(N^2) txns in all. Here the txn that
// claims prefix + rank (if it does not exist yet) also counts the members in the same step: a
// count-only range over the rank keys [prefix + "0", prefix + ":"), which in etcd's txn sees the
// put before it. The member whose count reaches size sets prefix + "all"; everyone then polls
// for it: a watch from the txn's revision on. Had "all" existed then, the count would have
// reached size already (only a member that counted size sets it, counts only grow: nothing
// deletes join keys), so no read of it first. No counter key, no retries: two requests per rank
// (the txn and the watch), and one Set by the last.
#include <fmt/format.h>

#include "collectives/store/etcd_api.h"
#include "collectives/store/etcd_store.h"
#include "collectives/store/store_errors.h"

namespace cohort::collectives {

bool EtcdStore::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                     Millis timeout) {
  const auto start = std::chrono::steady_clock::now();
  const std::string key = prefix + std::to_string(rank);
  const std::string what = fmt::format("Join({})", QuoteKey(key));
  const std::string tally = prefix + "tally";
  const auto r = etcd::ParsePutIf(
      Call("txn", etcd::PutIfBody(prefix_ + key, etcd::Condition{}, nonce, prefix_ + tally), what));
  int64_t count = r.count, missing_at = r.revision;
  if (!r.succeeded) {
    if (!r.current || r.current->value != nonce) return false;  // an earlier group's member
    // Our own put, whose answer was lost and the request retried: count now (the tally's
    // version: every member's successful txn so far, ours too).
    const auto kvs = etcd::ParseRange(Call("range", etcd::RangeBody(prefix_ + tally), what));
    count = kvs.empty() ? 0 : kvs.front().version;
    missing_at = 0;  // read "all" first
  }
  if (count >= size) {
    Set(prefix + "all", "1");
    return true;
  }
  std::string ignored;
  if (!Await(prefix + "all", start + timeout, &ignored, missing_at)) {
    ThrowGetTimeout("etcd " + endpoint_, prefix + "all",
                    std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start));
  }
  return true;
}

}  // namespace cohort::collectives
