#include "tests/util/kube/resource_types.h"

#include <algorithm>
#include <map>
#include <set>

namespace cohort::kube {
namespace {

ResourceType Builtin(std::string group, std::string version, std::string kind, std::string plural,
                     bool namespaced, bool has_status, std::vector<std::string> short_names = {}) {
  ResourceType t;
  t.group = std::move(group);
  t.version = std::move(version);
  t.kind = std::move(kind);
  t.plural = std::move(plural);
  t.singular = t.kind;
  std::transform(t.singular.begin(), t.singular.end(), t.singular.begin(), ::tolower);
  t.namespaced = namespaced;
  t.has_status = has_status;
  t.short_names = std::move(short_names);
  return t;
}

Json ApiResource(const ResourceType& t) {
  Json r = {{"name", t.plural},
            {"singularName", t.singular},
            {"namespaced", t.namespaced},
            {"kind", t.kind},
            {"verbs",
             {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}}};
  if (!t.short_names.empty()) r["shortNames"] = t.short_names;
  if (!t.categories.empty()) r["categories"] = t.categories;
  return r;
}

}  // namespace

ResourceRegistry::ResourceRegistry() {
  types_ = {
      Builtin("", "v1", "Namespace", "namespaces", false, true, {"ns"}),
      Builtin("", "v1", "Pod", "pods", true, true, {"po"}),
      Builtin("", "v1", "Service", "services", true, true, {"svc"}),
      Builtin("", "v1", "Secret", "secrets", true, false),
      Builtin("", "v1", "ConfigMap", "configmaps", true, false, {"cm"}),
      Builtin("", "v1", "ServiceAccount", "serviceaccounts", true, false, {"sa"}),
      Builtin("", "v1", "Event", "events", true, false, {"ev"}),
      Builtin("batch", "v1", "Job", "jobs", true, true),
      Builtin("apps", "v1", "Deployment", "deployments", true, true, {"deploy"}),
      Builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
      Builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false),
      Builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, false),
      Builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, false),
      Builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false,
              false),
      Builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
              false, true, {"crd", "crds"}),
  };
  for (auto& t : types_) {
    if (t.plural == "pods" || t.plural == "services" || t.plural == "deployments") {
      t.categories = {"all"};
    }
    if (t.plural == "jobs") t.categories = {"all"};
  }
}

std::optional<ResourceType> ResourceRegistry::Find(const std::string& group,
                                                   const std::string& version,
                                                   const std::string& plural) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& t : types_) {
    if (t.group == group && t.version == version && t.plural == plural) return t;
  }
  return std::nullopt;
}

std::optional<ResourceType> ResourceRegistry::FindKind(const std::string& api_version,
                                                       const std::string& kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& t : types_) {
    if (t.ApiVersion() == api_version && t.kind == kind) return t;
  }
  return std::nullopt;
}

void ResourceRegistry::AddCrd(const Json& crd) {
  const Json& spec = crd.at("spec");
  const std::string name = crd.at("metadata").at("name");
  RemoveCrd(name);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& v : spec.at("versions")) {
    if (!v.value("served", true)) continue;
    ResourceType t;
    t.group = spec.at("group");
    t.version = v.at("name");
    const Json& names = spec.at("names");
    t.kind = names.at("kind");
    t.plural = names.at("plural");
    t.singular = names.value("singular", "");
    if (t.singular.empty()) {
      t.singular = t.kind;
      std::transform(t.singular.begin(), t.singular.end(), t.singular.begin(), ::tolower);
    }
    t.short_names = names.value("shortNames", std::vector<std::string>{});
    t.categories = names.value("categories", std::vector<std::string>{});
    t.namespaced = spec.value("scope", "Namespaced") == "Namespaced";
    t.has_status = v.contains("subresources") && v["subresources"].contains("status");
    t.printer_columns = v.value("additionalPrinterColumns", Json::array());
    t.schema = v.contains("schema") ? v["schema"].value("openAPIV3Schema", Json::object())
                                    : Json::object();
    types_.push_back(std::move(t));
  }
}

void ResourceRegistry::RemoveCrd(const std::string& crd_name) {
  std::lock_guard<std::mutex> lock(mu_);
  types_.erase(std::remove_if(types_.begin(), types_.end(),
                              [&](const ResourceType& t) {
                                return t.IsCrd() && t.plural + "." + t.group == crd_name;
                              }),
               types_.end());
}

Json ResourceRegistry::CoreVersions(const std::string& server_address) const {
  return {{"kind", "APIVersions"},
          {"versions", {"v1"}},
          {"serverAddressByClientCIDRs",
           {{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", server_address}}}}};
}

Json ResourceRegistry::GroupList() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, std::vector<std::string>> versions;  // group -> versions, first seen
  std::vector<std::string> order;
  for (const auto& t : types_) {
    if (t.group.empty()) continue;
    auto& vs = versions[t.group];
    if (vs.empty()) order.push_back(t.group);
    if (std::find(vs.begin(), vs.end(), t.version) == vs.end()) vs.push_back(t.version);
  }
  Json groups = Json::array();
  for (const auto& g : order) {
    Json vs = Json::array();
    for (const auto& v : versions[g]) vs.push_back({{"groupVersion", g + "/" + v}, {"version", v}});
    groups.push_back({{"name", g}, {"versions", vs}, {"preferredVersion", vs[0]}});
  }
  return {{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", groups}};
}

std::optional<Json> ResourceRegistry::Group(const std::string& group) const {
  const Json groups = GroupList()["groups"];
  for (const auto& g : groups) {
    if (g["name"] == group) {
      Json out = g;
      out["kind"] = "APIGroup";
      out["apiVersion"] = "v1";
      return out;
    }
  }
  return std::nullopt;
}

std::optional<Json> ResourceRegistry::ResourceList(const std::string& group,
                                                   const std::string& version) const {
  std::lock_guard<std::mutex> lock(mu_);
  Json resources = Json::array();
  for (const auto& t : types_) {
    if (t.group != group || t.version != version) continue;
    resources.push_back(ApiResource(t));
    if (t.has_status) {
      resources.push_back({{"name", t.plural + "/status"},
                           {"singularName", ""},
                           {"namespaced", t.namespaced},
                           {"kind", t.kind},
                           {"verbs", {"get", "patch", "update"}}});
    }
  }
  if (resources.empty()) return std::nullopt;
  return Json{{"kind", "APIResourceList"},
              {"apiVersion", "v1"},
              {"groupVersion", group.empty() ? version : group + "/" + version},
              {"resources", resources}};
}

}  // namespace cohort::kube
