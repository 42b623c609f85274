#include "tests/util/kube/openapi.h"

#include <functional>

#include "common/hex.h"

namespace cohort::kube {
namespace {

std::string GvPath(const std::string& group, const std::string& version) {
  return group.empty() ? "api/" + version : "apis/" + group + "/" + version;
}

Json Operation(const Json& gvk, const std::string& action, bool with_validation) {
  Json params =
      Json::array({{{"name", "dryRun"}, {"in", "query"}, {"schema", {{"type", "string"}}}},
                   {{"name", "fieldManager"}, {"in", "query"}, {"schema", {{"type", "string"}}}}});
  if (with_validation) {
    params.push_back(
        {{"name", "fieldValidation"}, {"in", "query"}, {"schema", {{"type", "string"}}}});
  }
  return {{"x-kubernetes-group-version-kind", gvk},
          {"x-kubernetes-action", action},
          {"parameters", params},
          {"responses", {{"200", {{"description", "OK"}}}}}};
}

}  // namespace

Json OpenApiV3Index(const ResourceRegistry& registry) {
  Json paths = Json::object();
  auto add = [&](const std::string& group, const std::string& version) {
    const std::string path = GvPath(group, version);
    auto doc = OpenApiV3GroupVersion(registry, path);
    if (!doc) return;
    const size_t hash = std::hash<std::string>()(doc->dump());
    paths[path] = {
        {"serverRelativeURL", "/openapi/v3/" + path + "?hash=" + Hex(&hash, sizeof(hash))}};
  };
  add("", "v1");
  const Json groups = registry.GroupList()["groups"];
  for (const auto& g : groups) {
    for (const auto& v : g["versions"]) add(g["name"], v["version"]);
  }
  return {{"paths", paths}};
}

std::optional<Json> OpenApiV3GroupVersion(const ResourceRegistry& registry,
                                          const std::string& gv_path) {
  std::string group, version;
  if (gv_path.rfind("api/", 0) == 0) {
    version = gv_path.substr(4);
  } else if (gv_path.rfind("apis/", 0) == 0) {
    const std::string rest = gv_path.substr(5);
    const size_t slash = rest.find('/');
    if (slash == std::string::npos) return std::nullopt;
    group = rest.substr(0, slash);
    version = rest.substr(slash + 1);
  } else {
    return std::nullopt;
  }
  auto list = registry.ResourceList(group, version);
  if (!list) return std::nullopt;
  Json paths = Json::object();
  const std::string prefix = "/" + GvPath(group, version) + "/";
  for (const auto& r : (*list)["resources"]) {
    const std::string name = r["name"];
    if (name.find('/') != std::string::npos) continue;
    const Json gvk = {{"group", group}, {"version", version}, {"kind", r["kind"]}};
    const std::string item =
        prefix + (r["namespaced"].get<bool>() ? "namespaces/{namespace}/" : "") + name + "/{name}";
    paths[item] = {{"get", Operation(gvk, "get", false)},
                   {"put", Operation(gvk, "put", true)},
                   {"patch", Operation(gvk, "patch", true)},
                   {"delete", Operation(gvk, "delete", false)}};
  }
  return Json{{"openapi", "3.0.0"},
              {"info", {{"title", "Kubernetes"}, {"version", "v1.32.0"}}},
              {"paths", paths},
              {"components", {{"schemas", Json::object()}}}};
}

Json OpenApiV2() {
  return {{"swagger", "2.0"},
          {"info", {{"title", "Kubernetes"}, {"version", "v1.32.0"}}},
          {"paths", Json::object()},
          {"definitions", Json::object()}};
}

}  // namespace cohort::kube
