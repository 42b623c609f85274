#include "tests/util/kube/object_rules.h"

#include <ctime>
#include <regex>

#include "common/base64.h"
#include "common/hex.h"
#include "common/utc_time.h"
#include "tests/util/kube/api_error.h"

namespace cohort::kube {
namespace {

// metadata.name as the real server checks it for most types: an RFC 1123 subdomain.
void CheckName(const ResourceType& t, const std::string& name) {
  static const std::regex kSubdomain(
      "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*");
  if (name.size() > 253 || !std::regex_match(name, kSubdomain)) {
    throw Invalid(t.KindGroup(), name, "metadata.name",
                  "Invalid value: \"" + name +
                      "\": a lowercase RFC 1123 subdomain must consist of lower case "
                      "alphanumeric characters, '-' or '.', and must start and end with an "
                      "alphanumeric character");
  }
}

void DefaultJob(Json& object) {
  Json& spec = object["spec"];
  const std::string uid = object["metadata"].value("uid", "");
  const std::string name = object["metadata"].value("name", "");
  if (!spec.contains("parallelism")) spec["parallelism"] = 1;
  if (!spec.contains("completions")) spec["completions"] = spec["parallelism"];
  if (!spec.contains("backoffLimit")) spec["backoffLimit"] = 6;
  if (!spec.contains("completionMode")) spec["completionMode"] = "NonIndexed";
  if (!spec.contains("suspend")) spec["suspend"] = false;
  if (!spec.contains("podReplacementPolicy")) spec["podReplacementPolicy"] = "TerminatingOrFailed";
  if (!spec.value("manualSelector", false) && !spec.contains("selector")) {
    spec["selector"] = {{"matchLabels", {{"batch.kubernetes.io/controller-uid", uid}}}};
  }
  Json& labels = spec["template"]["metadata"]["labels"];
  labels["batch.kubernetes.io/controller-uid"] = uid;
  labels["batch.kubernetes.io/job-name"] = name;
  labels["controller-uid"] = uid;
  labels["job-name"] = name;
}

void SecretData(Json& object) {
  if (!object.contains("type")) object["type"] = "Opaque";
  if (!object.contains("stringData")) return;
  for (const auto& [k, v] : object["stringData"].items()) {
    object["data"][k] = Base64Encode(v.get<std::string>());
  }
  object.erase("stringData");
}

// What the real server requires of a CRD before it serves the type.
void CheckCrd(const Json& object) {
  const Json& spec = object.value("spec", Json::object());
  const std::string name = object["metadata"].value("name", "");
  const Json names = spec.value("names", Json::object());
  const std::string want = names.value("plural", "") + "." + spec.value("group", "");
  if (name != want) {
    throw Invalid("CustomResourceDefinition.apiextensions.k8s.io", name, "metadata.name",
                  "Invalid value: \"" + name + "\": must be spec.names.plural+\".\"+spec.group");
  }
  if (names.value("kind", "").empty()) {
    throw Invalid("CustomResourceDefinition.apiextensions.k8s.io", name, "spec.names.kind",
                  "Required value");
  }
  int storage = 0;
  for (const auto& v : spec.value("versions", Json::array())) storage += v.value("storage", false);
  if (storage != 1) {
    throw Invalid("CustomResourceDefinition.apiextensions.k8s.io", name, "spec.versions",
                  "Invalid value: must have exactly one version marked as storage version");
  }
}

void CrdStatus(Json& object) {
  CheckCrd(object);
  std::string stored;
  for (const auto& v : object["spec"].value("versions", Json::array())) {
    if (v.value("storage", false)) stored = v.value("name", "");
  }
  const std::string now = UtcNowRfc3339();
  object["status"] = {{"acceptedNames", object["spec"].value("names", Json::object())},
                      {"conditions",
                       {{{"type", "NamesAccepted"},
                         {"status", "True"},
                         {"reason", "NoConflicts"},
                         {"message", "no conflicts found"},
                         {"lastTransitionTime", now}},
                        {{"type", "Established"},
                         {"status", "True"},
                         {"reason", "InitialNamesAccepted"},
                         {"message", "the initial names have been accepted"},
                         {"lastTransitionTime", now}}}},
                      {"storedVersions", {stored}}};
}

// Everything that counts as spec for metadata.generation.
Json SpecPart(const ResourceType& t, Json o) {
  o.erase("metadata");
  if (t.has_status) o.erase("status");
  return o;
}

bool TracksGeneration(const ResourceType& t) { return t.has_status || t.IsCrd(); }

void Default(const ResourceType& t, Json& object) {
  if (t.plural == "jobs" && t.group == "batch") DefaultJob(object);
  if (t.plural == "secrets" && t.group.empty()) SecretData(object);
  if (t.plural == "customresourcedefinitions") CrdStatus(object);
}

}  // namespace

std::string NewUid() {
  std::string h = RandomHex(16);
  h[12] = '4';  // version 4
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20);
}

void CheckIdentity(const ResourceType& t, const std::string& ns, Json& object) {
  if (!object.is_object()) throw BadRequest("the body of the request is not a JSON object");
  const std::string api_version = object.value("apiVersion", t.ApiVersion());
  const std::string kind = object.value("kind", t.kind);
  if (api_version != t.ApiVersion() || kind != t.kind) {
    throw BadRequest("the API version in the data (" + api_version +
                     ") does not match the expected API version (" + t.ApiVersion() + ")" +
                     (kind != t.kind ? "; kind " + kind + " is not " + t.kind : ""));
  }
  object["apiVersion"] = t.ApiVersion();
  object["kind"] = t.kind;
  Json& meta = object["metadata"];
  if (!meta.is_object()) meta = Json::object();
  if (t.namespaced) {
    if (meta.contains("namespace") && meta["namespace"] != ns) {
      throw BadRequest(
          "the namespace of the provided object does not match the namespace sent "
          "on the request");
    }
    meta["namespace"] = ns;
  } else {
    meta.erase("namespace");
  }
  const std::string name = meta.value("name", "");
  if (name.empty() && meta.value("generateName", "").empty()) {
    throw Invalid(t.KindGroup(), "", "metadata.name",
                  "Required value: name or generateName is required");
  }
  if (!name.empty()) CheckName(t, name);
}

void PrepareForCreate(const ResourceType& t, Json& object) {
  if (t.has_status) object.erase("status");
  if (t.plural == "pods" && t.group.empty()) {
    object["status"] = {{"phase", "Pending"}, {"qosClass", "BestEffort"}};
    Json& spec = object["spec"];
    if (!spec.contains("restartPolicy")) spec["restartPolicy"] = "Always";
    if (!spec.contains("terminationGracePeriodSeconds")) spec["terminationGracePeriodSeconds"] = 30;
  }
  if (t.plural == "namespaces" && t.group.empty()) {
    object["spec"] = {{"finalizers", {"kubernetes"}}};
    object["status"] = {{"phase", "Active"}};
    object["metadata"]["labels"]["kubernetes.io/metadata.name"] = object["metadata"]["name"];
  }
  if (TracksGeneration(t)) object["metadata"]["generation"] = 1;
  Default(t, object);
}

void PrepareForUpdate(const ResourceType& t, const Json& old, Json& object,
                      bool status_subresource) {
  if (status_subresource) {
    Json status = object.value("status", Json());
    object = old;
    if (status.is_null()) {
      object.erase("status");
    } else {
      object["status"] = status;
    }
    return;
  }
  Json& meta = object["metadata"];
  const Json& old_meta = old["metadata"];
  for (const char* key : {"uid", "creationTimestamp", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "generation"}) {
    if (old_meta.contains(key)) {
      meta[key] = old_meta[key];
    } else {
      meta.erase(key);
    }
  }
  if (t.has_status) {
    if (old.contains("status")) {
      object["status"] = old["status"];
    } else {
      object.erase("status");
    }
  }
  Default(t, object);
  if (t.plural == "customresourcedefinitions") object["status"] = old["status"];
  if (TracksGeneration(t) && SpecPart(t, object) != SpecPart(t, old)) {
    meta["generation"] = old_meta.value("generation", 0) + 1;
  }
}

}  // namespace cohort::kube
