// meta.k8s.io/v1 Table answers (what `kubectl get` asks for with
// Accept: application/json;as=Table;v=v1;g=meta.k8s.io): Name plus a CRD's
// additionalPrinterColumns (JSONPath cells, dates as ages, as the real server renders them), or
// Name/Age with a few built-in columns (pods: Ready, Status, Restarts; jobs: Status,
// Completions).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "tests/util/kube/resource_types.h"

namespace cohort::kube {

using Json = nlohmann::json;

// Whether an Accept header asks for a Table.
bool WantsTable(const std::string& accept);

// `objects`: one object or a list (with items and metadata.resourceVersion).
// include_object: "None", "Metadata" (the default) or "Object".
Json ToTable(const ResourceType& t, const Json& objects, const std::string& include_object);

// The value at a simple JSONPath (".status.phase", ".spec.containers[0].image",
// ".metadata.labels.app"); null when absent.
Json JsonPathValue(const Json& object, const std::string& path);

}  // namespace cohort::kube
