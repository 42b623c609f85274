// EtcdStore::Join: a member's arrival in one etcd txn, for rendezvous of thousands of ranks.
// Store::Join's default counts arrivals with Add, which on etcd is a compare-and-swap loop on one
// key: N ranks arriving together retry O(N) times each, O(N^2) txns in all. Here the txn that
// claims prefix + rank (if it does not exist yet) also counts the members in the same step: a
// count-only range over the rank keys [prefix + "0", prefix + ":"), which in etcd's txn sees the
// put before it. The member whose count reaches size sets prefix + "all"; everyone then polls
// for it as Get does. No counter key, no retries: O(1) requests per rank, plus the polls.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "collectives/store/etcd_api.h"
#include "collectives/store/etcd_store.h"
#include "collectives/store/store_errors.h"
#include "common/error.h"

namespace cohort::collectives {
namespace {

using json = nlohmann::json;

// The range of the decimal rank keys under prefix ("count" and "all" start with letters).
json RankRange(const std::string& prefix, bool count_only) {
  json r = {{"key", etcd::Base64Encode(prefix + "0")},
            {"range_end", etcd::Base64Encode(prefix + ":")}};
  if (count_only) r["count_only"] = true;
  return r;
}

// If prefix + rank does not exist: put nonce there and count the rank keys; else read it.
std::string ClaimBody(const std::string& key, const std::string& prefix, const std::string& nonce) {
  const json compare = {{"key", etcd::Base64Encode(key)},
                        {"result", "EQUAL"},
                        {"target", "CREATE"},
                        {"create_revision", "0"}};
  const json put = {{"key", etcd::Base64Encode(key)}, {"value", etcd::Base64Encode(nonce)}};
  return json{{"compare", json::array({compare})},
              {"success", json::array({{{"request_put", put}},
                                       {{"request_range", RankRange(prefix, true)}}})},
              {"failure", json::array({{{"request_range", {{"key", etcd::Base64Encode(key)}}}}})}}
      .dump();
}

// The gateway writes int64 as strings and leaves out zero values.
int64_t CountOf(const json& range) {
  if (!range.contains("count")) return 0;
  const json& c = range["count"];
  return c.is_string() ? std::stoll(c.get<std::string>()) : c.get<int64_t>();
}

struct Claim {
  bool claimed = false;   // the key was absent and now holds our nonce
  int64_t members = 0;    // rank keys after the put (claimed only)
  std::string holder;     // what the key held (not claimed)
};

Claim ParseClaim(const std::string& body) {
  try {
    const json doc = json::parse(body);
    const json& responses = doc.at("responses");
    Claim c;
    c.claimed = doc.value("succeeded", false);
    if (c.claimed) {
      c.members = CountOf(responses.at(1).at("response_range"));
    } else {
      const json& range = responses.at(0).at("response_range");
      if (range.contains("kvs") && !range["kvs"].empty()) {
        c.holder = etcd::Base64Decode(range["kvs"][0].value("value", ""));
      }
    }
    return c;
  } catch (const json::exception& e) {
    throw DataLoss(fmt::format("etcd answered a join txn with something else: {} ({})",
                               body.substr(0, 200), e.what()));
  }
}

}  // namespace

bool EtcdStore::Join(const std::string& prefix, int rank, int size, const std::string& nonce,
                     Millis timeout) {
  const std::string key = prefix + std::to_string(rank);
  const std::string what = fmt::format("Join({})", QuoteKey(key));
  Claim c = ParseClaim(Call("txn", ClaimBody(prefix_ + key, prefix_ + prefix, nonce), what));
  if (!c.claimed) {
    if (c.holder != nonce) return false;  // an earlier group's member
    // Our own put, whose answer was lost and the request retried: count now.
    c.members = CountOf(json::parse(Call("range", RankRange(prefix_ + prefix, true).dump(), what)));
  }
  if (c.members >= size) Set(prefix + "all", "1");
  Get(prefix + "all", timeout);
  return true;
}

}  // namespace cohort::collectives
