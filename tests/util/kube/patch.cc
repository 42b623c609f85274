#include "tests/util/kube/patch.h"

#include <algorithm>

#include "tests/util/kube/api_error.h"

namespace cohort::kube {
namespace {

const std::string kSetOrder = "$setElementOrder/";
const std::string kDeletePrimitive = "$deleteFromPrimitiveList/";

// The key that identifies elements of the list under `field` (Kubernetes' patchMergeKey), or ""
// when the list is replaced whole.
std::string MergeKey(const std::string& field, const Json& elements) {
  if (elements.empty() || !elements[0].is_object()) return "";
  const char* candidates[] = {"name", "containerPort", "port", "mountPath", "devicePath",
                              "ip",   "type"};
  std::string key;
  if (field == "volumeMounts") key = "mountPath";
  if (field == "ports") key = elements[0].contains("containerPort") ? "containerPort" : "port";
  if (field == "conditions") key = "type";
  if (key.empty()) {
    for (const char* c : candidates) {
      if (elements[0].contains(c)) {
        key = c;
        break;
      }
    }
  }
  if (key.empty()) return "";
  for (const auto& e : elements) {
    if (!e.is_object() || (!e.contains(key) && e.value("$patch", "") != "delete")) return "";
  }
  return key;
}

Json MergeList(const Json& original, const Json& patch, const std::string& field) {
  if (field == "finalizers" && original.is_array()) {  // patchStrategy merge on strings
    Json out = original;
    for (const auto& v : patch) {
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
    return out;
  }
  const std::string key = MergeKey(field, patch);
  if (key.empty() || !original.is_array()) {
    Json out = Json::array();
    for (const auto& e : patch) {
      if (!(e.is_object() && e.contains("$patch"))) out.push_back(e);
    }
    return out;
  }
  Json out = original;
  for (const auto& e : patch) {
    if (e.value("$patch", "") == "replace") return Json::array();
    auto it = std::find_if(out.begin(), out.end(), [&](const Json& o) {
      return o.is_object() && o.contains(key) && o[key] == e[key];
    });
    if (e.value("$patch", "") == "delete") {
      if (it != out.end()) out.erase(it);
    } else if (it != out.end()) {
      *it = StrategicMerge(*it, e, "");
    } else {
      out.push_back(StrategicMerge(Json::object(), e, ""));
    }
  }
  return out;
}

}  // namespace

Json StrategicMerge(const Json& original, const Json& patch, const std::string& field) {
  if (patch.is_array()) return MergeList(original, patch, field);
  if (!patch.is_object()) return patch;
  if (patch.value("$patch", "") == "replace") {
    Json out = patch;
    out.erase("$patch");
    return out;
  }
  Json out = original.is_object() ? original : Json::object();
  for (const auto& [k, v] : patch.items()) {
    if (k == "$patch" || k.rfind(kSetOrder, 0) == 0) continue;
    if (k == "$retainKeys") continue;  // applied below, after the merge
    if (k.rfind(kDeletePrimitive, 0) == 0) {
      const std::string target = k.substr(kDeletePrimitive.size());
      if (out.contains(target) && out[target].is_array()) {
        Json kept = Json::array();
        for (const auto& e : out[target]) {
          if (std::find(v.begin(), v.end(), e) == v.end()) kept.push_back(e);
        }
        out[target] = kept;
      }
      continue;
    }
    if (v.is_null()) {
      out.erase(k);
    } else if (v.is_object() && v.value("$patch", "") == "delete") {
      out.erase(k);
    } else {
      out[k] = StrategicMerge(out.contains(k) ? out[k] : Json(), v, k);
    }
  }
  if (patch.contains("$retainKeys")) {
    const Json& keep = patch["$retainKeys"];
    for (auto it = out.begin(); it != out.end();) {
      if (std::find(keep.begin(), keep.end(), it.key()) == keep.end()) {
        it = out.erase(it);
      } else {
        ++it;
      }
    }
  }
  return out;
}

Json ApplyPatch(const Json& original, const std::string& body, const std::string& content_type,
                bool strategic_allowed) {
  const std::string type = content_type.substr(0, content_type.find(';'));
  const bool strategic = type == "application/strategic-merge-patch+json";
  if (type != "application/merge-patch+json" && type != "application/json-patch+json" &&
      !(strategic && strategic_allowed)) {
    std::string accepted = "application/json-patch+json, application/merge-patch+json";
    if (strategic_allowed) accepted += ", application/strategic-merge-patch+json";
    throw ApiError(415, "UnsupportedMediaType",
                   "the body of the request was in an unknown format - accepted media types "
                   "include: " +
                       accepted);
  }
  Json patch = Json::parse(body, nullptr, false);
  if (patch.is_discarded()) {
    throw BadRequest("error decoding patch: invalid JSON in the body of the " + type);
  }
  if (type == "application/json-patch+json") {
    if (!patch.is_array()) throw BadRequest("json: cannot unmarshal object into []jsonpatch");
    try {
      return original.patch(patch);
    } catch (const nlohmann::json::exception& e) {
      throw ApiError(422, "Invalid",
                     std::string("the server rejected our request due to an "
                                 "error in our request: ") +
                         e.what());
    }
  }
  if (!patch.is_object()) throw BadRequest("error decoding patch: the patch is not an object");
  if (strategic) return StrategicMerge(original, patch);
  Json out = original;
  out.merge_patch(patch);
  return out;
}

}  // namespace cohort::kube
