// labelSelector and fieldSelector query parameters as the API server reads them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cohort::kube {

using Json = nlohmann::json;

// A label selector: comma-separated requirements "k=v", "k==v", "k!=v", "k", "!k",
// "k in (a,b)", "k notin (a,b)". Throws ApiError 400 on text it cannot parse.
class LabelSelector {
 public:
  explicit LabelSelector(const std::string& text = "");
  bool Matches(const Json& object) const;  // reads object.metadata.labels

 private:
  struct Requirement {
    std::string key, op;  // op: "=", "!=", "in", "notin", "exists", "!"
    std::vector<std::string> values;
  };
  std::vector<Requirement> reqs_;
};

// A field selector: "f=v", "f==v", "f!=v" joined by commas, for metadata.name,
// metadata.namespace (every type) and the string fields the built-in types allow (status.phase,
// spec.nodeName of pods; type of secrets). Throws ApiError 400 naming an unsupported field, as
// the real server does ("field label not supported: ...").
class FieldSelector {
 public:
  FieldSelector(const std::string& text, const std::string& plural);
  bool Matches(const Json& object) const;

 private:
  struct Requirement {
    std::vector<std::string> path;
    bool equal = true;
    std::string value;
  };
  std::vector<Requirement> reqs_;
};

}  // namespace cohort::kube
