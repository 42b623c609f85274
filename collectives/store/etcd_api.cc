#include "collectives/store/etcd_api.h"

#include "common/error.h"

namespace cohort::collectives::etcd {
namespace {

KeyValue FromPb(const pb::KeyValue& kv) {
  return {kv.key(), kv.value(), kv.mod_revision(), kv.version()};
}

}  // namespace

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<uint8_t>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

pb::RangeRequest PrefixRange(const std::string& prefix) {
  pb::RangeRequest r;
  r.set_key(prefix);
  r.set_range_end(PrefixEnd(prefix));
  return r;
}

std::vector<KeyValue> KeyValues(const pb::RangeResponse& range) {
  std::vector<KeyValue> out;
  out.reserve(range.kvs_size());
  for (const auto& kv : range.kvs()) out.push_back(FromPb(kv));
  return out;
}

pb::TxnRequest PutIf(const std::string& key, const Condition& when, const std::string& value,
                     const std::string& tally) {
  pb::TxnRequest txn;
  pb::Compare* compare = txn.add_compare();
  compare->set_key(key);
  compare->set_result(pb::Compare::EQUAL);
  switch (when.kind) {
    case Condition::kAbsent:  // never created (or deleted since): create_revision 0
      compare->set_target(pb::Compare::CREATE);
      compare->set_create_revision(0);
      break;
    case Condition::kValue:
      compare->set_target(pb::Compare::VALUE);
      compare->set_value(when.value);
      break;
    case Condition::kModRevision:
      compare->set_target(pb::Compare::MOD);
      compare->set_mod_revision(when.mod_revision);
      break;
  }
  pb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  if (!tally.empty()) {
    pb::PutRequest* count = txn.add_success()->mutable_request_put();
    count->set_key(tally);
    count->set_prev_kv(true);
  }
  txn.add_failure()->mutable_request_range()->set_key(key);
  return txn;
}

pb::TxnRequest PutIfRecorded(const std::string& key, const Condition& when,
                             const std::string& value, const std::string& record,
                             const std::vector<std::string>& spent) {
  pb::TxnRequest txn = PutIf(key, when, value);
  pb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(record);
  put->set_value(value);
  for (const std::string& old : spent) {
    txn.add_success()->mutable_request_delete_range()->set_key(old);
  }
  txn.add_failure()->mutable_request_range()->set_key(record);
  return txn;
}

TxnResult ParsePutIf(const pb::TxnResponse& answer) {
  TxnResult r;
  r.succeeded = answer.succeeded();
  r.revision = answer.header().revision();
  if (r.succeeded) {
    // The tally's put, the second response (the first is the key's): its previous version (0,
    // and no prev_kv, for the tally's first put).
    if (answer.responses_size() > 1) {
      r.count = answer.responses(1).response_put().prev_kv().version() + 1;
    }
    return r;
  }
  if (answer.responses_size() == 0 || !answer.responses(0).has_response_range()) {
    throw DataLoss("etcd's txn answer has no read of the key: " +
                   answer.ShortDebugString().substr(0, 200));
  }
  const auto& kvs = answer.responses(0).response_range().kvs();
  if (!kvs.empty()) r.current = FromPb(kvs[0]);
  if (answer.responses_size() > 1 && answer.responses(1).has_response_range()) {
    const auto& record = answer.responses(1).response_range().kvs();
    if (!record.empty()) r.recorded = record[0].value();
  }
  return r;
}

pb::WatchRequest WatchFrom(const std::string& key, int64_t start_revision) {
  pb::WatchRequest w;
  w.mutable_create_request()->set_key(key);
  w.mutable_create_request()->set_start_revision(start_revision);
  return w;
}

WatchMessage ParseWatch(const pb::WatchResponse& message) {
  WatchMessage m;
  m.canceled = message.canceled();
  m.compact_revision = message.compact_revision();
  if (m.canceled && m.compact_revision == 0) {
    m.error = message.cancel_reason().empty() ? "the watch was canceled" : message.cancel_reason();
  }
  for (const auto& event : message.events()) {
    if (event.type() == pb::Event::PUT) m.puts.push_back(FromPb(event.kv()));
  }
  return m;
}

}  // namespace cohort::collectives::etcd
