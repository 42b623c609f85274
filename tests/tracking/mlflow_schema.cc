// The request messages of MLflow's service.proto and model_registry.proto that the double
// serves, as field -> JSON type, checked the way protobuf's JSON parser and MLflow's handler
// schemas check them (int64 as number or decimal string, double as number or "NaN"/"Infinity",
// enums by name), with MLflow's INVALID_PARAMETER_VALUE messages.
#include <fmt/format.h>

#include <cmath>
#include <map>
#include <set>

#include "tests/tracking/mlflow_double.h"

namespace cohort::tracking::testing {
namespace {

using nlohmann::json;

enum class Type { kString, kInt64, kDouble, kRunStatus, kKeyValues, kMetrics };

struct Field {
  Type type;
  bool required = false;
};

using Message = std::map<std::string, Field>;

const Message kKeyValue = {{"key", {Type::kString}}, {"value", {Type::kString}}};
const Message kMetric = {{"key", {Type::kString}},
                         {"value", {Type::kDouble}},
                         {"timestamp", {Type::kInt64}},
                         {"step", {Type::kInt64}}};

const std::map<std::string, Message>& Messages() {
  static const std::map<std::string, Message> m = {
      {"experiments/get-by-name", {{"experiment_name", {Type::kString, true}}}},
      {"experiments/create",
       {{"name", {Type::kString, true}},
        {"artifact_location", {Type::kString}},
        {"tags", {Type::kKeyValues}}}},
      {"runs/create",
       {{"experiment_id", {Type::kString}},
        {"user_id", {Type::kString}},
        {"run_name", {Type::kString}},
        {"start_time", {Type::kInt64}},
        {"tags", {Type::kKeyValues}}}},
      {"runs/update",
       {{"run_id", {Type::kString}},
        {"run_uuid", {Type::kString}},
        {"status", {Type::kRunStatus}},
        {"end_time", {Type::kInt64}},
        {"run_name", {Type::kString}}}},
      {"runs/get", {{"run_id", {Type::kString}}, {"run_uuid", {Type::kString}}}},
      {"runs/log-batch",
       {{"run_id", {Type::kString, true}},
        {"metrics", {Type::kMetrics}},
        {"params", {Type::kKeyValues}},
        {"tags", {Type::kKeyValues}}}},
      {"runs/set-tag",
       {{"run_id", {Type::kString}},
        {"run_uuid", {Type::kString}},
        {"key", {Type::kString, true}},
        {"value", {Type::kString, true}}}},
      {"registered-models/create",
       {{"name", {Type::kString, true}},
        {"tags", {Type::kKeyValues}},
        {"description", {Type::kString}}}},
      {"registered-models/get", {{"name", {Type::kString, true}}}},
      {"model-versions/create",
       {{"name", {Type::kString, true}},
        {"source", {Type::kString, true}},
        {"run_id", {Type::kString}},
        {"tags", {Type::kKeyValues}},
        {"run_link", {Type::kString}},
        {"description", {Type::kString}}}},
      {"registered-models/alias",
       {{"name", {Type::kString, true}},
        {"alias", {Type::kString, true}},
        {"version", {Type::kString, true}}}},
  };
  return m;
}

// Python's name for the JSON value's type, as MLflow's hint prints it.
std::string PyType(const json& v) {
  if (v.is_string()) return "str";
  if (v.is_boolean()) return "bool";
  if (v.is_number_integer()) return "int";
  if (v.is_number()) return "float";
  if (v.is_array()) return "list";
  if (v.is_object()) return "dict";
  return "NoneType";
}

std::string Invalid(const std::string& field, const json& v) {
  return fmt::format(
      "Invalid value {} for parameter '{}' supplied. Hint: Value was of type '{}'. See the API "
      "docs for more information about request parameters.",
      v.dump(), field, PyType(v));
}

bool IsInt64(const json& v) {
  if (v.is_number_integer()) return true;
  if (v.is_number_float()) return std::floor(v.get<double>()) == v.get<double>();
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  size_t i = !s.empty() && s[0] == '-' ? 1 : 0;
  return i < s.size() && s.find_first_not_of("0123456789", i) == std::string::npos;
}

bool IsDouble(const json& v) {
  if (v.is_number()) return true;
  static const std::set<std::string> kSpecial = {"NaN", "Infinity", "-Infinity"};
  return v.is_string() && kSpecial.count(v.get<std::string>()) > 0;
}

std::string Check(const Message& message, const json& body, const std::string& where);

std::string CheckValue(const std::string& name, const Field& f, const json& v) {
  switch (f.type) {
    case Type::kString:
      return v.is_string() ? "" : Invalid(name, v);
    case Type::kInt64:
      return IsInt64(v) ? "" : Invalid(name, v);
    case Type::kDouble:
      return IsDouble(v) ? "" : Invalid(name, v);
    case Type::kRunStatus: {
      static const std::set<std::string> kStatus = {"RUNNING", "SCHEDULED", "FINISHED", "FAILED",
                                                    "KILLED"};
      return v.is_string() && kStatus.count(v.get<std::string>()) ? "" : Invalid(name, v);
    }
    case Type::kKeyValues:
    case Type::kMetrics: {
      if (!v.is_array()) return Invalid(name, v);
      for (const json& item : v) {
        if (!item.is_object()) return Invalid(name, v);
        std::string e = Check(f.type == Type::kMetrics ? kMetric : kKeyValue, item, name + ".");
        if (!e.empty()) return e;
      }
      return "";
    }
  }
  return "";
}

std::string Check(const Message& message, const json& body, const std::string& where) {
  if (!body.is_object()) return Invalid(where.empty() ? "body" : where, body);
  for (const auto& [name, v] : body.items()) {
    auto it = message.find(name);
    if (it == message.end())
      return fmt::format(
          "Unknown field '{}{}' (MLflow would ignore it and drop its data; the test double "
          "rejects it). See the API docs for more information about request parameters.",
          where, name);
    if (v.is_null()) continue;  // protobuf's JSON parser treats null as unset
    std::string e = CheckValue(where + name, it->second, v);
    if (!e.empty()) return e;
  }
  for (const auto& [name, f] : message) {
    auto it = body.find(name);
    if (f.required && (it == body.end() || it->is_null() || *it == ""))
      return fmt::format(
          "Missing value for required parameter '{}{}'. See the API docs for more information "
          "about request parameters.",
          where, name);
  }
  return "";
}

}  // namespace

std::string ValidateRequest(const std::string& endpoint, const json& body) {
  auto it = Messages().find(endpoint);
  if (it == Messages().end()) return "unknown endpoint " + endpoint;
  return Check(it->second, body, "");
}

}  // namespace cohort::tracking::testing
