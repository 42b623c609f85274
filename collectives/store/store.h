// The rendezvous store: a small key-value service that ranks use to find each other, exchange
// addresses and ids, count arrivals and report their health. Values are arbitrary bytes.
// Implementations: MemoryStore (one process), GrpcStoreClient (over the network to a
// GrpcStoreServer), PrefixStore (scopes keys of another store), EtcdStore.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cohort::collectives {

class Store {
 public:
  using Millis = std::chrono::milliseconds;

  virtual ~Store() = default;

  // Sets key to value, waking every waiter on key.
  virtual void Set(const std::string& key, const std::string& value) = 0;

  // Returns key's value, waiting up to timeout for it to be set. Throws Timeout naming the key
  // and how long it waited. A timeout of zero does not wait.
  virtual std::string Get(const std::string& key, Millis timeout) = 0;

  // Adds delta to the integer stored at key (absent counts as 0) and returns the new value.
  // Throws InvalidArgument when key holds something that is not a decimal integer.
  virtual int64_t Add(const std::string& key, int64_t delta) = 0;

  // Sets key to desired if it currently holds expected; an empty expected matches an absent key.
  // Returns the value key holds after the call (desired on success).
  virtual std::string CompareSet(const std::string& key, const std::string& expected,
                                 const std::string& desired) = 0;

  // Removes key; returns whether it existed.
  virtual bool Delete(const std::string& key) = 0;

  // Waits until every key exists. Throws Timeout naming the keys still missing.
  virtual void Wait(const std::vector<std::string>& keys, Millis timeout) = 0;

  // Every key that starts with prefix, with its value.
  virtual std::map<std::string, std::string> List(const std::string& prefix) = 0;

  // One member's arrival at a group of `size` under prefix (JoinGroup, rendezvous.h): Arrive,
  // then wait up to timeout for prefix + "all". Returns false, at once, when prefix + rank
  // already held another value (an earlier group under the same name); throws Timeout when not
  // everyone arrived in time. Other keys under prefix are the store's own. The default makes
  // four calls (ArriveAt's counter at prefix + "count", then Get); a store that can do better
  // overrides it (gRPC: one round trip; etcd: one txn, no counter, and a watch), because at
  // thousands of ranks the store's per-call cost is the rendezvous's cost.
  virtual bool Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                    Millis timeout);
  // Join's arrival alone, for a member that learns of the others another way (the launchers'
  // rendezvous: node 0 waits for "all" and publishes a table, which the others wait for): claims
  // prefix + rank with nonce and counts the arrival; the last arrival sets prefix + "all".
  // Returns false when prefix + rank already held another value (then nothing was counted).
  // Default: ArriveAt (three calls); gRPC: one round trip; etcd: one txn.
  virtual bool Arrive(const std::string& prefix, int rank, int size, const std::string& nonce);
};

// The arrival half of Store::Join on anything with CompareSet, Add and Set (a Store, or the gRPC
// server's KvTable, which runs it for a one-call Join): returns false when prefix + rank held
// another value. O(1) work per rank: a counter, not a scan of the members.
template <typename Kv>
bool ArriveAt(Kv& kv, const std::string& prefix, int rank, int size, const std::string& nonce) {
  if (kv.CompareSet(prefix + std::to_string(rank), "", nonce) != nonce) return false;
  if (kv.Add(prefix + "count", 1) == size) kv.Set(prefix + "all", "1");
  return true;
}

}  // namespace cohort::collectives
