// The parts of etcd's v3 JSON gateway (etcd 3.4: POST /v3/kv/range, /v3/kv/put,
// /v3/kv/deleterange, /v3/kv/txn, /v3/auth/authenticate) that EtcdStore uses: request bodies and
// answers, with keys and values in base64 as the gateway wants them. Pure functions, no I/O, so
// they are unit-tested without a server. The gateway leaves out fields at their zero value ("kvs",
// "value", "succeeded", "deleted"), and writes 64-bit integers as strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cohort::collectives::etcd {

// common/base64's decoding of what etcd sent; throws DataLoss on text that is not base64.
// (Encoding is cohort::Base64Encode.)
std::string Base64Decode(const std::string& text);

// The range_end that makes a range cover every key starting with prefix (etcd's prefix end: the
// prefix with its last byte below 0xff incremented and the rest cut; "\0" when there is none).
std::string PrefixEnd(const std::string& prefix);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
  int64_t version = 0;  // puts since the key was created
};

std::string PutBody(const std::string& key, const std::string& value);
std::string RangeBody(const std::string& key);
std::string PrefixRangeBody(const std::string& prefix);
std::string DeleteBody(const std::string& key);

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
std::string PutIfBody(const std::string& key, const Condition& when, const std::string& value,
                      const std::string& tally = "");

// The keys of a range answer, and in *revision (when given) the store's revision it was read at.
// Throws DataLoss when the answer is not what etcd sends.
std::vector<KeyValue> ParseRange(const std::string& body, int64_t* revision = nullptr);
// Whether a deleterange answer deleted anything.
bool ParseDeleted(const std::string& body);

struct TxnResult {
  bool succeeded = false;
  std::optional<KeyValue> current;  // on failure: the key as it was, if it existed
  int64_t count = 0;                // on success with a tally: the successes on it, this one too
  int64_t revision = 0;             // the store's revision after the txn
};
TxnResult ParsePutIf(const std::string& body);

// POST /v3/watch (a stream of JSON objects, one per message): the request that watches key from
// start_revision on (events at that revision and later, also those already past).
std::string WatchBody(const std::string& key, int64_t start_revision);

// One message of a watch stream.
struct WatchMessage {
  std::vector<KeyValue> puts;    // the keys put by its events, in order (deletes are left out)
  bool canceled = false;         // etcd ended the watch (then compact_revision or error says why)
  int64_t compact_revision = 0;  // canceled because start_revision was compacted away: retry
  std::string error;             // an error message in place of a result (the gateway's "error")
};
// Throws DataLoss when the object is not a watch message.
WatchMessage ParseWatch(std::string_view object);

// POST /v3/auth/authenticate: the body for a user's name and password, and the token of the
// answer (the value of the "Authorization" header of later calls). Throws DataLoss when the
// answer carries no token.
std::string AuthenticateBody(const std::string& user, const std::string& password);
std::string ParseAuthToken(const std::string& body);

// The "error" / "message" of an error answer, or the body cut to one line.
std::string ErrorMessage(const std::string& body);

}  // namespace cohort::collectives::etcd
