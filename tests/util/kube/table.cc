#include "tests/util/kube/table.h"

#include <ctime>

namespace cohort::kube {
namespace {

std::string Age(const std::string& timestamp) {
  std::tm tm{};
  if (timestamp.empty() || !strptime(timestamp.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm))
    return "<unknown>";
  const long seconds = static_cast<long>(std::time(nullptr) - timegm(&tm));
  if (seconds < 120) return std::to_string(std::max(seconds, 0L)) + "s";
  if (seconds < 3600 * 3) return std::to_string(seconds / 60) + "m";
  if (seconds < 86400 * 2) return std::to_string(seconds / 3600) + "h";
  return std::to_string(seconds / 86400) + "d";
}

Json Column(const std::string& name, const std::string& type, const std::string& format = "") {
  return {{"name", name}, {"type", type}, {"format", format}, {"description", ""}, {"priority", 0}};
}

std::string PodStatus(const Json& pod) {
  if (pod["metadata"].contains("deletionTimestamp")) return "Terminating";
  const Json& status = pod.value("status", Json::object());
  for (const auto& c : status.value("containerStatuses", Json::array())) {
    const Json& state = c.value("state", Json::object());
    if (state.contains("terminated")) {
      return state["terminated"].value("reason", "Completed");
    }
  }
  return status.value("phase", "Pending");
}

std::string JobStatus(const Json& job) {
  for (const auto& c : job.value("status", Json::object()).value("conditions", Json::array())) {
    if (c.value("status", "") != "True") continue;
    const std::string type = c.value("type", "");
    if (type == "Complete" || type == "Failed" || type == "Suspended") return type;
  }
  return "Running";
}

void Columns(const ResourceType& t, Json& defs, const Json& o, Json& cells) {
  if (t.IsCrd() && !t.printer_columns.empty()) {
    for (const auto& c : t.printer_columns) {
      const std::string type = c.value("type", "string");
      if (defs.size() <= cells.size()) defs.push_back(Column(c.value("name", ""), type));
      Json v = JsonPathValue(o, c.value("jsonPath", ""));
      if (type == "date") v = v.is_string() ? Json(Age(v.get<std::string>())) : Json("<unknown>");
      cells.push_back(v.is_null() ? Json("") : v);  // the real server leaves absent cells empty
    }
    return;
  }
  auto add = [&](const std::string& name, const std::string& type, Json v) {
    if (defs.size() <= cells.size()) defs.push_back(Column(name, type));
    cells.push_back(std::move(v));
  };
  const Json& status = o.value("status", Json::object());
  if (t.plural == "pods" && t.group.empty()) {
    int ready = 0, restarts = 0,
        total = static_cast<int>(o["spec"].value("containers", Json::array()).size());
    for (const auto& c : status.value("containerStatuses", Json::array())) {
      ready += c.value("ready", false);
      restarts += c.value("restartCount", 0);
    }
    add("Ready", "string", std::to_string(ready) + "/" + std::to_string(total));
    add("Status", "string", PodStatus(o));
    add("Restarts", "string", std::to_string(restarts));
  } else if (t.plural == "jobs" && t.group == "batch") {
    add("Status", "string", JobStatus(o));
    add("Completions", "string",
        std::to_string(status.value("succeeded", 0)) + "/" +
            std::to_string(o["spec"].value("completions", 1)));
  }
  add("Age", "string", Age(o["metadata"].value("creationTimestamp", "")));
}

}  // namespace

bool WantsTable(const std::string& accept) { return accept.find("as=Table") != std::string::npos; }

Json JsonPathValue(const Json& object, const std::string& path) {
  const Json* at = &object;
  size_t i = 0;
  while (i < path.size() && at) {
    if (path[i] == '.') {
      const size_t end = path.find_first_of(".[", i + 1);
      const std::string key = path.substr(i + 1, end == std::string::npos ? end : end - i - 1);
      at = at->is_object() && at->contains(key) ? &(*at)[key] : nullptr;
      i = end == std::string::npos ? path.size() : end;
    } else if (path[i] == '[') {
      const size_t end = path.find(']', i);
      if (end == std::string::npos) return Json();
      const size_t index = std::stoul(path.substr(i + 1, end - i - 1));
      at = at->is_array() && index < at->size() ? &(*at)[index] : nullptr;
      i = end + 1;
    } else {
      return Json();
    }
  }
  return at ? *at : Json();
}

Json ToTable(const ResourceType& t, const Json& objects, const std::string& include_object) {
  const bool list = objects.contains("items");
  const Json items = list ? objects["items"] : Json::array({objects});
  Json defs = Json::array({Column("Name", "string", "name")});
  Json rows = Json::array();
  for (const auto& o : items) {
    Json cells = Json::array({o["metadata"].value("name", "")});
    Columns(t, defs, o, cells);
    Json row = {{"cells", cells}};
    if (include_object == "Object") {
      row["object"] = o;
    } else if (include_object != "None") {
      row["object"] = {{"kind", "PartialObjectMetadata"},
                       {"apiVersion", "meta.k8s.io/v1"},
                       {"metadata", o["metadata"]}};
    }
    rows.push_back(row);
  }
  if (items.empty()) {  // the columns without a row to compute them from
    Json cells = Json::array({""});
    Columns(t, defs, {{"metadata", Json::object()}, {"spec", Json::object()}}, cells);
  }
  const std::string rv = objects["metadata"].value("resourceVersion", "");
  return {{"kind", "Table"},
          {"apiVersion", "meta.k8s.io/v1"},
          {"metadata", {{"resourceVersion", rv}}},
          {"columnDefinitions", defs},
          {"rows", rows}};
}

}  // namespace cohort::kube
