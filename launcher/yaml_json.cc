#include "launcher/yaml_json.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <regex>
#include <vector>

#include "common/error.h"

namespace cohort::launcher {
namespace {

using Json = nlohmann::ordered_json;

bool Matches(const std::string& s, const std::regex& re) { return std::regex_match(s, re); }

// YAML 1.2 core schema, for reading plain scalars.
const std::regex kNull12{"~|null|Null|NULL|"};
const std::regex kTrue12{"true|True|TRUE"};
const std::regex kFalse12{"false|False|FALSE"};
const std::regex kInt12{"[-+]?[0-9]+"};
const std::regex kOctHex12{"0o[0-7]+|0x[0-9a-fA-F]+"};
const std::regex kFloat12{
    "[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)"};

// What YAML 1.1 (kubectl's go-yaml, PyYAML) reads as something other than a string, beyond
// the 1.2 forms: yes/no/on/off, 0b/0-octal/underscored/sexagesimal numbers ("2:4" is 124 to
// PyYAML), the merge and value keys.
const std::regex kNonString11{
    "y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF|<<|=|"
    "[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|"
    "[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+(\\.[0-9_]*)?|"
    "[-+]?([0-9][0-9_]*)?\\.[0-9.]*([eE][-+][0-9]+)?"};

bool ReadsAsNonString(const std::string& s) {
  for (const std::regex* re :
       {&kNull12, &kTrue12, &kFalse12, &kInt12, &kOctHex12, &kFloat12, &kNonString11}) {
    if (Matches(s, *re)) return true;
  }
  return false;
}

[[noreturn]] void Fail(const std::string& what, const YAML::Mark& mark, const std::string& msg) {
  if (mark.is_null()) throw InvalidArgument(fmt::format("{}: {}", what, msg));
  throw InvalidArgument(
      fmt::format("{}: line {}, column {}: {}", what, mark.line + 1, mark.column + 1, msg));
}

Json PlainScalar(const std::string& s) {
  if (Matches(s, kNull12)) return nullptr;
  if (Matches(s, kTrue12)) return true;
  if (Matches(s, kFalse12)) return false;
  try {
    if (Matches(s, kInt12)) return std::stoll(s);
    if (Matches(s, kOctHex12)) return std::stoll(s.substr(2), nullptr, s[1] == 'o' ? 8 : 16);
  } catch (const std::out_of_range&) {
    return std::stod(s);  // too large for an integer: as YAML parsers that use doubles do
  }
  if (Matches(s, kFloat12)) {
    if (s.find("nan") != std::string::npos || s.find("NaN") != std::string::npos ||
        s.find("NAN") != std::string::npos || s.find("inf") != std::string::npos ||
        s.find("Inf") != std::string::npos || s.find("INF") != std::string::npos) {
      return s;  // JSON has no NaN or infinity; keep the text
    }
    return std::stod(s);
  }
  return s;
}

Json ToJson(const YAML::Node& node, const std::string& what) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      // "?" marks a plain scalar; quoted ones and explicit tags (!!str) stay strings.
      return node.Tag() == "?" ? PlainScalar(node.Scalar()) : Json(node.Scalar());
    case YAML::NodeType::Sequence: {
      Json out = Json::array();
      for (const YAML::Node& item : node) out.push_back(ToJson(item, what));
      return out;
    }
    case YAML::NodeType::Map: {
      Json out = Json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) Fail(what, kv.first.Mark(), "a mapping key must be a scalar");
        const std::string key = kv.first.Scalar();
        if (out.contains(key)) {
          Fail(what, kv.first.Mark(), fmt::format("duplicate key '{}'; keep one of them", key));
        }
        out[key] = ToJson(kv.second, what);
      }
      return out;
    }
  }
  return nullptr;
}

void Emit(YAML::Emitter& out, const Json& v) {
  if (v.is_object()) {
    if (v.empty()) {
      out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
      return;
    }
    out << YAML::BeginMap;
    for (const auto& [key, value] : v.items()) {
      out << YAML::Key;
      if (ReadsAsNonString(key)) out << YAML::DoubleQuoted;
      out << key << YAML::Value;
      Emit(out, value);
    }
    out << YAML::EndMap;
  } else if (v.is_array()) {
    if (v.empty()) {
      out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
      return;
    }
    out << YAML::BeginSeq;
    for (const Json& item : v) Emit(out, item);
    out << YAML::EndSeq;
  } else if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (ReadsAsNonString(s)) out << YAML::DoubleQuoted;
    out << s;
  } else if (v.is_boolean()) {
    out << (v.get<bool>() ? "true" : "false");
  } else if (v.is_number_integer()) {
    out << v.get<int64_t>();
  } else if (v.is_number()) {
    out << v.dump();  // nlohmann's shortest round-trip form
  } else {
    out << YAML::Null;
  }
}

}  // namespace

Json YamlToJson(const std::string& text, const std::string& what) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    Fail(what, e.mark, e.msg);
  }
  if (docs.size() != 1) {
    throw InvalidArgument(
        fmt::format("{}: has {} YAML documents; give exactly one (one TrainingJob per file)", what,
                    docs.size()));
  }
  return ToJson(docs[0], what);
}

std::string JsonToYaml(const Json& doc) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  out.SetMapFormat(YAML::Block);
  Emit(out, doc);
  if (!out.good()) throw Internal("YAML emitter: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

}  // namespace cohort::launcher
