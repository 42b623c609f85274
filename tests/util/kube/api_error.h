// Kubernetes API errors as the real API server reports them: a meta/v1 Status object
// ({"kind":"Status","apiVersion":"v1","status":"Failure","code":...,"reason":...,"message":...,
// "details":{...}}) with the same HTTP code and reason (NotFound 404, AlreadyExists 409,
// Conflict 409, Invalid 422, BadRequest 400, Gone/Expired 410, MethodNotAllowed 405).
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace cohort::kube {

using Json = nlohmann::json;

class ApiError : public std::runtime_error {
 public:
  ApiError(int code, std::string reason, const std::string& message, Json details = Json())
      : std::runtime_error(message),
        code_(code),
        reason_(std::move(reason)),
        details_(std::move(details)) {}
  int code() const { return code_; }
  const std::string& reason() const { return reason_; }
  // The Status object the API server sends for this error.
  Json ToStatus() const {
    Json s = {{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", Json::object()},
              {"status", "Failure"}, {"message", what()},  {"reason", reason_},
              {"code", code_}};
    if (!details_.is_null()) s["details"] = details_;
    return s;
  }

 private:
  int code_;
  std::string reason_;
  Json details_;
};

// "<plural>.<group>" as the API server names a resource in messages ("jobs.batch", "pods").
inline std::string QualifiedResource(const std::string& plural, const std::string& group) {
  return group.empty() ? plural : plural + "." + group;
}

inline ApiError NotFound(const std::string& plural, const std::string& group,
                         const std::string& name) {
  return ApiError(404, "NotFound", QualifiedResource(plural, group) + " \"" + name + "\" not found",
                  {{"name", name}, {"group", group}, {"kind", plural}});
}

inline ApiError AlreadyExists(const std::string& plural, const std::string& group,
                              const std::string& name) {
  return ApiError(409, "AlreadyExists",
                  QualifiedResource(plural, group) + " \"" + name + "\" already exists",
                  {{"name", name}, {"group", group}, {"kind", plural}});
}

inline ApiError Conflict(const std::string& plural, const std::string& group,
                         const std::string& name) {
  return ApiError(409, "Conflict",
                  "Operation cannot be fulfilled on " + QualifiedResource(plural, group) + " \"" +
                      name +
                      "\": the object has been modified; please apply your changes to the latest "
                      "version and try again",
                  {{"name", name}, {"group", group}, {"kind", plural}});
}

// 422: `kind` is the object's kind qualified by group ("Job.batch", "TrainingJob.cohort.dev").
inline ApiError Invalid(const std::string& kind_group, const std::string& name,
                        const std::string& field, const std::string& what) {
  return ApiError(
      422, "Invalid", kind_group + " \"" + name + "\" is invalid: " + field + ": " + what,
      {{"name", name},
       {"kind", kind_group},
       {"causes",
        Json::array({{{"reason", "FieldValueInvalid"}, {"message", what}, {"field", field}}})}});
}

inline ApiError BadRequest(const std::string& message) {
  return ApiError(400, "BadRequest", message);
}

}  // namespace cohort::kube
