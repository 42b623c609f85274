// The requests EtcdStore sends to etcd's v3 gRPC API (etcd_rpc.proto) and what it reads from the
// answers. Pure functions, no I/O, so they are unit-tested without a server.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "collectives/store/etcd_rpc.pb.h"

namespace cohort::collectives::etcd {

namespace pb = ::etcdserverpb;

// The range_end that makes a range cover every key starting with prefix (etcd's prefix end: the
// prefix with its last byte below 0xff incremented and the rest cut; "\0" when there is none).
std::string PrefixEnd(const std::string& prefix);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
  int64_t version = 0;  // puts since the key was created
};

pb::RangeRequest PrefixRange(const std::string& prefix);
std::vector<KeyValue> KeyValues(const pb::RangeResponse& range);

// What a conditional put compares the key against.
struct Condition {
  enum Kind { kAbsent, kValue, kModRevision } kind = kAbsent;
  std::string value;         // kValue
  int64_t mod_revision = 0;  // kModRevision
};

// A txn: if key meets `when`, put value; otherwise read key (so the caller learns what it holds).
// With a tally key, a successful txn also puts the tally (an empty value) and reads back its
// previous version, the number of successful txns on that tally before this one
// (TxnResult::count is that + 1). Puts of one key never conflict, so N members counting
// themselves cost O(1) each (where a count of a range of N keys is O(N), and a counter's
// compare-and-swap retries O(N) times).
pb::TxnRequest PutIf(const std::string& key, const Condition& when, const std::string& value,
                     const std::string& tally = "");

// PutIf for a counter: a successful txn also puts `record` (a key of the caller's own) to the
// same value, and a failed one also reads record back, so that a txn sent again after its
// answer was lost learns that it was applied the first time (TxnResult::recorded). A successful
// one also deletes the keys in `spent` (earlier records no resend can need any more).
pb::TxnRequest PutIfRecorded(const std::string& key, const Condition& when,
                             const std::string& value, const std::string& record,
                             const std::vector<std::string>& spent = {});

struct TxnResult {
  bool succeeded = false;
  std::optional<KeyValue> current;  // on failure: the key as it was, if it existed
  std::optional<std::string> recorded;  // on failure of PutIfRecorded: the record, if it exists
  int64_t count = 0;                // on success with a tally: the successes on it, this one too
  int64_t revision = 0;             // the store's revision after the txn
};
// Throws DataLoss when a failed txn's answer carries no read of the key.
TxnResult ParsePutIf(const pb::TxnResponse& answer);

// The request that watches key from start_revision on (events at that revision and later, also
// those already past).
pb::WatchRequest WatchFrom(const std::string& key, int64_t start_revision);

// One message of a watch stream.
struct WatchMessage {
  std::vector<KeyValue> puts;    // the keys put by its events, in order (deletes are left out)
  bool canceled = false;         // etcd ended the watch (then compact_revision or error says why)
  int64_t compact_revision = 0;  // canceled because start_revision was compacted away: retry
  std::string error;             // canceled for another reason: etcd's (e.g. permission denied)
};
WatchMessage ParseWatch(const pb::WatchResponse& message);

}  // namespace cohort::collectives::etcd
