// The PATCH bodies the API server accepts, by Content-Type:
//   application/merge-patch+json           RFC 7386 (null deletes, lists replace)
//   application/json-patch+json            RFC 6902
//   application/strategic-merge-patch+json built-in types only (custom resources answer 415, as
//                                          the real server does); lists of objects merge by
//                                          their merge key (name, containerPort, port,
//                                          mountPath), $patch: replace/delete,
//                                          $deleteFromPrimitiveList/, $retainKeys and
//                                          $setElementOrder/ (order only) directives.
// Server-side apply (application/apply-patch+yaml) is not implemented: 415.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace cohort::kube {

using Json = nlohmann::json;

// Applies `patch` (the request body) of media type `content_type` to `original`. Throws
// ApiError 415 for a media type it does not take and 400/422 for a body it cannot apply.
Json ApplyPatch(const Json& original, const std::string& body, const std::string& content_type,
                bool strategic_allowed);

// Strategic merge of patch into original (exposed for the double's unit tests).
Json StrategicMerge(const Json& original, const Json& patch, const std::string& field = "");

}  // namespace cohort::kube
