// YAML in and out of JSON values, for `cohort render`: a TrainingJob is read as YAML into a
// JSON value, and the manifests built as JSON values are printed as YAML (yaml-cpp both ways).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace cohort::launcher {

// Parses exactly one YAML document. Plain scalars resolve as in YAML 1.2's core schema (null,
// true/false, integers, floats; anything else is a string); quoted scalars are strings. Throws
// InvalidArgument, one line naming `what` and the line, for a syntax error, a duplicate key, a
// non-scalar key, or a stream of zero or several documents.
nlohmann::ordered_json YamlToJson(const std::string& text, const std::string& what);

// One document in block style, keys in the value's order. A string that YAML 1.1 or 1.2 would
// read back as something else ("4", "true", "null", "yes", "") is double-quoted, so that the
// output means the same to kubectl (YAML 1.1) as to PyYAML and yaml-cpp. Ends with a newline.
std::string JsonToYaml(const nlohmann::ordered_json& doc);

}  // namespace cohort::launcher
