// What the API server does to an object of a given type on the way into storage: defaults,
// status reset on create, which writes an endpoint may make, validation of names and of custom
// resources against their CRD's schema. Pure functions over JSON, used by ObjectStore.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "tests/util/kube/resource_types.h"

namespace cohort::kube {

using Json = nlohmann::json;

std::string NewUid();  // a random UUID, as metadata.uid

// Checks apiVersion/kind/name/namespace of a body sent to `t` in `ns` (400 / 422 as the real
// server), fills apiVersion and kind when missing.
void CheckIdentity(const ResourceType& t, const std::string& ns, Json& object);

// Creation: the status of a type with a status subresource is reset (pods Pending, namespaces
// Active, CRDs Established), built-in defaults (Job completions/parallelism/backoffLimit/
// completionMode/suspend and its selector and pod labels, Secret stringData into data).
void PrepareForCreate(const ResourceType& t, Json& object);

// An update: object becomes what is stored. Keeps the immutable metadata of old, the old status
// (main endpoint of a type with a status subresource) or everything but status (/status
// endpoint), and bumps metadata.generation when the spec part changed.
void PrepareForUpdate(const ResourceType& t, const Json& old, Json& object,
                      bool status_subresource);

// A custom resource against its CRD's structural schema: unknown fields pruned (unless
// x-kubernetes-preserve-unknown-fields), defaults filled, then type, required, enum, minimum,
// maximum, minLength, maxLength, pattern, minItems, maxItems checked. Throws ApiError 422
// naming every field that fails, as the real server does. field_validation "Strict" (what
// kubectl sends) answers 400 for a field the schema does not declare instead of pruning it.
void ApplySchema(const ResourceType& t, Json& object, const std::string& field_validation);

}  // namespace cohort::kube
