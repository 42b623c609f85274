// The OpenAPI documents kubectl reads before it writes: /openapi/v3 (the index of group
// versions) and /openapi/v3/<api|apis/group>/<version> (per group version: a PATCH operation per
// resource carrying x-kubernetes-group-version-kind and the fieldValidation parameter, so kubectl
// leaves validation to the server and sends fieldValidation=Strict as it does to a real one), and
// /openapi/v2 (an empty Swagger document, or an empty protobuf Document when the client asks for
// protobuf as kubectl does: no client-side schemas, so kubectl skips its own validation of what
// the v3 documents do not cover, such as a v1 List of objects).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tests/util/kube/resource_types.h"

namespace cohort::kube {

Json OpenApiV3Index(const ResourceRegistry& registry);
// gv_path: "api/v1" or "apis/<group>/<version>"; nullopt when no such group version.
std::optional<Json> OpenApiV3GroupVersion(const ResourceRegistry& registry,
                                          const std::string& gv_path);
Json OpenApiV2();

}  // namespace cohort::kube
