#include "collectives/store/etcd_api.h"

#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/error.h"

namespace cohort::collectives::etcd {
namespace {

using nlohmann::json;

json Parse(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) throw DataLoss("etcd answered with something that is not JSON: " + body);
  return j;
}

int64_t Int(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return 0;
  if (it->is_string()) return std::stoll(it->get<std::string>());
  return it->get<int64_t>();
}

// The store revision in an answer's header.
int64_t Revision(const json& answer) {
  auto header = answer.find("header");
  return header == answer.end() ? 0 : Int(*header, "revision");
}

std::vector<KeyValue> KeyValues(const json& range) {
  std::vector<KeyValue> out;
  auto kvs = range.find("kvs");
  if (kvs == range.end()) return out;
  for (const json& kv : *kvs) {
    out.push_back({Base64Decode(kv.value("key", "")), Base64Decode(kv.value("value", "")),
                   Int(kv, "mod_revision"), Int(kv, "version")});
  }
  return out;
}

}  // namespace

std::string Base64Decode(const std::string& text) {
  try {
    return cohort::Base64Decode(text, "a key or value etcd sent");
  } catch (const InvalidArgument& e) {
    throw DataLoss(std::string(e.what()) + ": " + text);
  }
}

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

std::string PutBody(const std::string& key, const std::string& value) {
  return json{{"key", cohort::Base64Encode(key)}, {"value", cohort::Base64Encode(value)}}.dump();
}

std::string RangeBody(const std::string& key) {
  return json{{"key", cohort::Base64Encode(key)}}.dump();
}

std::string PrefixRangeBody(const std::string& prefix) {
  return json{{"key", cohort::Base64Encode(prefix)},
              {"range_end", cohort::Base64Encode(PrefixEnd(prefix))}}
      .dump();
}

std::string DeleteBody(const std::string& key) { return RangeBody(key); }

std::string PutIfBody(const std::string& key, const Condition& when, const std::string& value,
                      const std::string& tally) {
  json compare = {{"key", cohort::Base64Encode(key)}, {"result", "EQUAL"}};
  switch (when.kind) {
    case Condition::kAbsent:
      compare["target"] = "CREATE";
      compare["create_revision"] = "0";
      break;
    case Condition::kValue:
      compare["target"] = "VALUE";
      compare["value"] = cohort::Base64Encode(when.value);
      break;
    case Condition::kModRevision:
      compare["target"] = "MOD";
      compare["mod_revision"] = std::to_string(when.mod_revision);
      break;
  }
  json put = {{"request_put",
               {{"key", cohort::Base64Encode(key)}, {"value", cohort::Base64Encode(value)}}}};
  json success = json::array({put});
  if (!tally.empty()) {
    success.push_back({{"request_put",
                        {{"key", cohort::Base64Encode(tally)}, {"value", ""}, {"prev_kv", true}}}});
  }
  json range = {{"request_range", {{"key", cohort::Base64Encode(key)}}}};
  return json{{"compare", json::array({compare})},
              {"success", std::move(success)},
              {"failure", json::array({range})}}
      .dump();
}

std::vector<KeyValue> ParseRange(const std::string& body, int64_t* revision) {
  const json j = Parse(body);
  if (revision) *revision = Revision(j);
  return KeyValues(j);
}

bool ParseDeleted(const std::string& body) { return Int(Parse(body), "deleted") > 0; }

TxnResult ParsePutIf(const std::string& body) {
  const json j = Parse(body);
  TxnResult r;
  r.succeeded = j.value("succeeded", false);
  r.revision = Revision(j);
  auto responses = j.find("responses");
  if (r.succeeded) {
    // The tally's put, the second response (the first is the key's): its previous version.
    if (responses != j.end() && responses->size() > 1) {
      const json put = (*responses)[1].value("response_put", json::object());
      r.count = Int(put.value("prev_kv", json::object()), "version") + 1;
    }
    return r;
  }
  if (responses == j.end() || responses->empty() || !(*responses)[0].contains("response_range")) {
    throw DataLoss("etcd's txn answer has no read of the key: " + body);
  }
  auto kvs = KeyValues((*responses)[0]["response_range"]);
  if (!kvs.empty()) r.current = kvs.front();
  return r;
}

std::string WatchBody(const std::string& key, int64_t start_revision) {
  return json{
      {"create_request",
       {{"key", cohort::Base64Encode(key)}, {"start_revision", std::to_string(start_revision)}}}}
      .dump();
}

WatchMessage ParseWatch(std::string_view object) {
  const json j = json::parse(object, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    throw DataLoss("etcd's watch stream sent something that is not JSON: " +
                   std::string(object.substr(0, 200)));
  }
  WatchMessage m;
  if (auto e = j.find("error"); e != j.end()) {
    m.error = e->is_object() ? e->value("message", e->dump()) : e->dump();
    m.canceled = true;
    return m;
  }
  auto result = j.find("result");
  if (result == j.end() || !result->is_object()) {
    throw DataLoss("etcd's watch message has no result: " + std::string(object.substr(0, 200)));
  }
  m.canceled = result->value("canceled", false);
  m.compact_revision = Int(*result, "compact_revision");
  if (m.canceled && m.compact_revision == 0) m.error = result->value("cancel_reason", "");
  for (const json& event : result->value("events", json::array())) {
    if (event.value("type", "PUT") != "PUT" || !event.contains("kv")) continue;
    const json& kv = event["kv"];
    m.puts.push_back({Base64Decode(kv.value("key", "")), Base64Decode(kv.value("value", "")),
                      Int(kv, "mod_revision")});
  }
  return m;
}

std::string AuthenticateBody(const std::string& user, const std::string& password) {
  return json{{"name", user}, {"password", password}}.dump();
}

std::string ParseAuthToken(const std::string& body) {
  const json j = Parse(body);
  auto it = j.find("token");
  if (it == j.end() || !it->is_string() || it->get<std::string>().empty()) {
    throw DataLoss("etcd's authenticate answer carries no token: " + body.substr(0, 200));
  }
  return it->get<std::string>();
}

std::string ErrorMessage(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    if (j.contains("message") && j["message"].is_string()) return j["message"];
    if (j.contains("error") && j["error"].is_string()) return j["error"];
  }
  return body.substr(0, 200);
}

}  // namespace cohort::collectives::etcd
