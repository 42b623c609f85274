#include "tests/util/kube/selectors.h"

#include <set>

#include "tests/util/kube/api_error.h"

namespace cohort::kube {
namespace {

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(' ');
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(' ') - b + 1);
}

// Splits at commas outside parentheses.
std::vector<std::string> SplitTopLevel(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(Trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!Trim(cur).empty() || !out.empty()) out.push_back(Trim(cur));
  return out;
}

std::vector<std::string> SetValues(const std::string& text, const std::string& whole) {
  const size_t open = text.find('('), close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    throw BadRequest("unable to parse requirement: found '" + whole + "', expected: '('");
  }
  std::vector<std::string> values;
  std::string inner = text.substr(open + 1, close - open - 1), cur;
  for (char c : inner + ",") {
    if (c == ',') {
      values.push_back(Trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  return values;
}

const std::string* Label(const Json& object, const std::string& key) {
  const Json* labels = nullptr;
  if (object.contains("metadata") && object["metadata"].contains("labels")) {
    labels = &object["metadata"]["labels"];
  }
  if (!labels || !labels->contains(key) || !(*labels)[key].is_string()) return nullptr;
  return (*labels)[key].get_ptr<const std::string*>();
}

}  // namespace

LabelSelector::LabelSelector(const std::string& text) {
  for (const std::string& part : SplitTopLevel(text)) {
    if (part.empty()) throw BadRequest("unable to parse requirement: empty requirement");
    Requirement r;
    size_t at;
    if (part[0] == '!') {
      r = {Trim(part.substr(1)), "!", {}};
    } else if ((at = part.find(" notin ")) != std::string::npos) {
      r = {Trim(part.substr(0, at)), "notin", SetValues(part.substr(at), part)};
    } else if ((at = part.find(" in ")) != std::string::npos) {
      r = {Trim(part.substr(0, at)), "in", SetValues(part.substr(at), part)};
    } else if ((at = part.find("!=")) != std::string::npos) {
      r = {Trim(part.substr(0, at)), "!=", {Trim(part.substr(at + 2))}};
    } else if ((at = part.find("==")) != std::string::npos) {
      r = {Trim(part.substr(0, at)), "=", {Trim(part.substr(at + 2))}};
    } else if ((at = part.find('=')) != std::string::npos) {
      r = {Trim(part.substr(0, at)), "=", {Trim(part.substr(at + 1))}};
    } else {
      r = {part, "exists", {}};
    }
    if (r.key.empty()) throw BadRequest("unable to parse requirement: '" + part + "'");
    reqs_.push_back(std::move(r));
  }
}

bool LabelSelector::Matches(const Json& object) const {
  for (const auto& r : reqs_) {
    const std::string* v = Label(object, r.key);
    const bool in = v && std::find(r.values.begin(), r.values.end(), *v) != r.values.end();
    if (r.op == "exists" && !v) return false;
    if (r.op == "!" && v) return false;
    if ((r.op == "=" || r.op == "in") && !in) return false;
    if ((r.op == "!=" || r.op == "notin") && in) return false;
  }
  return true;
}

FieldSelector::FieldSelector(const std::string& text, const std::string& plural) {
  static const std::set<std::string> kPodFields = {"status.phase", "spec.nodeName",
                                                   "spec.restartPolicy", "status.podIP"};
  for (const std::string& part : SplitTopLevel(text)) {
    if (part.empty()) continue;
    Requirement r;
    size_t at = part.find("!=");
    std::string field;
    if (at != std::string::npos) {
      r.equal = false;
      field = Trim(part.substr(0, at));
      r.value = Trim(part.substr(at + 2));
    } else if ((at = part.find("==")) != std::string::npos) {
      field = Trim(part.substr(0, at));
      r.value = Trim(part.substr(at + 2));
    } else if ((at = part.find('=')) != std::string::npos) {
      field = Trim(part.substr(0, at));
      r.value = Trim(part.substr(at + 1));
    } else {
      throw BadRequest("invalid selector: '" + text + "'; can't understand '" + part + "'");
    }
    const bool ok = field == "metadata.name" || field == "metadata.namespace" ||
                    (plural == "pods" && kPodFields.count(field)) ||
                    (plural == "secrets" && field == "type");
    if (!ok) throw BadRequest("field label not supported: " + field);
    for (size_t b = 0, e; b <= field.size(); b = e + 1) {
      e = field.find('.', b);
      if (e == std::string::npos) e = field.size();
      r.path.push_back(field.substr(b, e - b));
    }
    reqs_.push_back(std::move(r));
  }
}

bool FieldSelector::Matches(const Json& object) const {
  for (const auto& r : reqs_) {
    const Json* at = &object;
    for (const auto& key : r.path) {
      at = at->is_object() && at->contains(key) ? &(*at)[key] : nullptr;
      if (!at) break;
    }
    const std::string value = at && at->is_string() ? at->get<std::string>() : "";
    if ((value == r.value) != r.equal) return false;
  }
  return true;
}

}  // namespace cohort::kube
