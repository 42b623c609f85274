// The resource types the API-server double serves: the built-in ones it knows (core v1
// namespaces, pods, services, secrets, configmaps, serviceaccounts, events; batch/v1 jobs;
// apps/v1 deployments; coordination.k8s.io/v1 leases; rbac; apiextensions.k8s.io/v1
// customresourcedefinitions) and those that CRDs add, with the discovery documents
// (/api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>) built from them.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cohort::kube {

using Json = nlohmann::json;

struct ResourceType {
  std::string group;  // "" for the core group
  std::string version;
  std::string kind;
  std::string plural;
  std::string singular;
  bool namespaced = true;
  bool has_status = false;  // a /status subresource: the main endpoint ignores status changes
  std::vector<std::string> short_names;
  std::vector<std::string> categories;
  Json printer_columns = Json::array();  // a CRD's additionalPrinterColumns
  Json schema;                           // a CRD's openAPIV3Schema (null for built-ins)

  std::string ApiVersion() const { return group.empty() ? version : group + "/" + version; }
  // "Job.batch", "Pod": how Invalid messages name the kind.
  std::string KindGroup() const { return group.empty() ? kind : kind + "." + group; }
  bool IsCrd() const { return !schema.is_null(); }
};

class ResourceRegistry {
 public:
  ResourceRegistry();  // the built-in types

  // The type served at group/version under plural; nullopt when none.
  std::optional<ResourceType> Find(const std::string& group, const std::string& version,
                                   const std::string& plural) const;
  std::optional<ResourceType> FindKind(const std::string& api_version,
                                       const std::string& kind) const;
  // Adds (or replaces) the types a CustomResourceDefinition object declares: one per served
  // version. Removes them again with RemoveCrd(the CRD's name "<plural>.<group>").
  void AddCrd(const Json& crd);
  void RemoveCrd(const std::string& crd_name);

  Json CoreVersions(const std::string& server_address) const;  // GET /api
  Json GroupList() const;                                      // GET /apis
  std::optional<Json> Group(const std::string& group) const;   // GET /apis/<group>
  // GET /api/v1 or /apis/<group>/<version>; nullopt when no such group version.
  std::optional<Json> ResourceList(const std::string& group, const std::string& version) const;

 private:
  mutable std::mutex mu_;
  std::vector<ResourceType> types_;
};

}  // namespace cohort::kube
