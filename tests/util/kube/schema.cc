// ApplySchema (object_rules.h): a custom resource against its CRD's structural schema, the way
// the real API server's apiextensions code prunes, defaults and validates (the subset of
// OpenAPI v3 that CRDs use; no CEL rules).
#include <regex>
#include <vector>

#include "tests/util/kube/api_error.h"
#include "tests/util/kube/object_rules.h"

namespace cohort::kube {
namespace {

bool Preserves(const Json& schema) {
  return schema.value("x-kubernetes-preserve-unknown-fields", false);
}

// Drops fields the schema does not declare and fills declared defaults, depth first.
void PruneAndDefault(const Json& schema, Json& value, const std::string& path,
                     std::vector<std::string>& pruned) {
  if (value.is_object()) {
    if (schema.contains("properties")) {
      const Json& props = schema["properties"];
      for (auto it = value.begin(); it != value.end();) {
        if (props.contains(it.key())) {
          PruneAndDefault(props[it.key()], it.value(), path + "." + it.key(), pruned);
          ++it;
        } else if (schema.contains("additionalProperties") || Preserves(schema)) {
          ++it;
        } else {
          pruned.push_back(path + "." + it.key());
          it = value.erase(it);
        }
      }
      for (const auto& [k, sub] : props.items()) {
        if (!value.contains(k) && sub.contains("default")) value[k] = sub["default"];
      }
    } else if (schema.contains("additionalProperties") &&
               schema["additionalProperties"].is_object()) {
      for (auto& [k, v] : value.items()) {
        PruneAndDefault(schema["additionalProperties"], v, path + "." + k, pruned);
      }
    } else if (!Preserves(schema) && schema.value("type", "") == "object") {
      for (const auto& [k, v] : value.items()) pruned.push_back(path + "." + k);
      value = Json::object();  // an object with no declared fields keeps none
    }
  } else if (value.is_array() && schema.contains("items")) {
    for (size_t i = 0; i < value.size(); ++i) {
      PruneAndDefault(schema["items"], value[i], path + "[" + std::to_string(i) + "]", pruned);
    }
  }
}

std::string Show(const Json& v) { return v.dump(); }

bool HasType(const Json& v, const std::string& type, const Json& schema) {
  if (schema.value("x-kubernetes-int-or-string", false))
    return v.is_number_integer() || v.is_string();
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "integer") return v.is_number_integer();
  if (type == "number") return v.is_number();
  if (type == "boolean") return v.is_boolean();
  return true;
}

void Check(const Json& schema, const Json& v, const std::string& path,
           std::vector<std::string>& errors) {
  if (v.is_null() && schema.value("nullable", false)) return;
  const std::string type = schema.value("type", "");
  if (!type.empty() && !HasType(v, type, schema)) {
    errors.push_back(path + ": Invalid value: \"" + std::string(v.type_name()) + "\": " + path +
                     " in body must be of type " + type + ": \"" + v.type_name() + "\"");
    return;
  }
  if (schema.contains("enum") &&
      std::find(schema["enum"].begin(), schema["enum"].end(), v) == schema["enum"].end()) {
    std::string supported;
    for (const auto& e : schema["enum"]) supported += (supported.empty() ? "" : ", ") + Show(e);
    errors.push_back(path + ": Unsupported value: " + Show(v) + ": supported values: " + supported);
  }
  if (v.is_number()) {
    if (schema.contains("minimum") && v.get<double>() < schema["minimum"].get<double>()) {
      errors.push_back(path + ": Invalid value: " + Show(v) + ": " + path +
                       " in body should be greater than or equal to " + Show(schema["minimum"]));
    }
    if (schema.contains("maximum") && v.get<double>() > schema["maximum"].get<double>()) {
      errors.push_back(path + ": Invalid value: " + Show(v) + ": " + path +
                       " in body should be less than or equal to " + Show(schema["maximum"]));
    }
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (schema.contains("minLength") && s.size() < schema["minLength"].get<size_t>()) {
      errors.push_back(path + ": Invalid value: " + Show(v) + ": " + path +
                       " in body should be at least " + Show(schema["minLength"]) + " chars long");
    }
    if (schema.contains("maxLength") && s.size() > schema["maxLength"].get<size_t>()) {
      errors.push_back(path + ": Too long: may not be longer than " + Show(schema["maxLength"]));
    }
    if (schema.contains("pattern") &&
        !std::regex_search(s, std::regex(schema["pattern"].get<std::string>()))) {
      errors.push_back(path + ": Invalid value: " + Show(v) + ": " + path +
                       " in body should match '" + schema["pattern"].get<std::string>() + "'");
    }
  }
  if (v.is_array()) {
    if (schema.contains("minItems") && v.size() < schema["minItems"].get<size_t>()) {
      errors.push_back(path + ": Invalid value: " + std::to_string(v.size()) + ": " + path +
                       " in body should have at least " + Show(schema["minItems"]) + " items");
    }
    if (schema.contains("maxItems") && v.size() > schema["maxItems"].get<size_t>()) {
      errors.push_back(path + ": Too many: " + std::to_string(v.size()) + ": must have at most " +
                       Show(schema["maxItems"]) + " items");
    }
    if (schema.contains("items")) {
      for (size_t i = 0; i < v.size(); ++i) {
        Check(schema["items"], v[i], path + "[" + std::to_string(i) + "]", errors);
      }
    }
  }
  if (v.is_object()) {
    for (const auto& r : schema.value("required", Json::array())) {
      if (!v.contains(r.get<std::string>())) {
        errors.push_back(path + "." + r.get<std::string>() + ": Required value");
      }
    }
    const Json props = schema.value("properties", Json::object());
    for (const auto& [k, sub] : v.items()) {
      if (props.contains(k)) {
        Check(props[k], sub, path + "." + k, errors);
      } else if (schema.contains("additionalProperties") &&
                 schema["additionalProperties"].is_object()) {
        Check(schema["additionalProperties"], sub, path + "." + k, errors);
      }
    }
  }
}

}  // namespace

void ApplySchema(const ResourceType& t, Json& object, const std::string& field_validation) {
  Json schema = t.schema;
  if (schema.is_null() || schema.empty()) return;
  // apiVersion, kind and metadata are the server's, never pruned or checked here.
  Json kept = {{"apiVersion", object["apiVersion"]},
               {"kind", object["kind"]},
               {"metadata", object["metadata"]}};
  for (const char* k : {"apiVersion", "kind", "metadata"}) {
    object.erase(k);
    if (schema.contains("properties")) schema["properties"].erase(k);
  }
  std::vector<std::string> pruned;
  PruneAndDefault(schema, object, "", pruned);
  if (field_validation == "Strict" && !pruned.empty()) {
    std::string fields;
    for (const auto& f : pruned)
      fields += (fields.empty() ? "" : ", ") + ("\"" + f.substr(1) + "\"");
    throw BadRequest(t.kind + " in version \"" + t.version + "\" cannot be handled as a " + t.kind +
                     ": strict decoding error: unknown field " + fields);
  }
  std::vector<std::string> errors;
  Check(schema, object, "", errors);
  for (auto& [k, v] : kept.items()) object[k] = v;
  if (errors.empty()) return;
  for (auto& e : errors) {
    if (!e.empty() && e[0] == '.') e.erase(0, 1);  // "spec.x", not ".spec.x"
    for (size_t at; (at = e.find(": .")) != std::string::npos;) e.erase(at + 2, 1);
    for (size_t at; (at = e.find(" .")) != std::string::npos;) e.erase(at + 1, 1);
  }
  std::string message = errors[0];
  if (errors.size() > 1) {
    message = "[";
    for (size_t i = 0; i < errors.size(); ++i) message += (i ? ", " : "") + errors[i];
    message += "]";
  }
  const std::string name = object["metadata"].value("name", "");
  Json causes = Json::array();
  for (const auto& e : errors) {
    causes.push_back(
        {{"reason", "FieldValueInvalid"}, {"message", e}, {"field", e.substr(0, e.find(':'))}});
  }
  throw ApiError(422, "Invalid", t.KindGroup() + " \"" + name + "\" is invalid: " + message,
                 {{"name", name}, {"group", t.group}, {"kind", t.kind}, {"causes", causes}});
}

}  // namespace cohort::kube
