#include "launcher/render_parts.h"

#include <fmt/format.h>

#include "common/env.h"
#include "common/error.h"

namespace cohort::launcher::render {
namespace {

std::string Show(const Json& v) {
  std::string s = v.dump();
  return s.size() <= 60 ? s : s.substr(0, 57) + "...";
}

// Merges src into dst at `field` (spec.podTemplate...): mappings merge, lists append, equal
// scalars are fine, a different scalar is an error.
void MergeInto(Json& dst, const Json& src, const std::string& field) {
  if (dst.is_object() && src.is_object()) {
    for (const auto& [key, value] : src.items()) {
      if (!dst.contains(key)) {
        dst[key] = value;
      } else {
        MergeInto(dst[key], value, field + "." + key);
      }
    }
  } else if (dst.is_array() && src.is_array()) {
    for (const Json& item : src) dst.push_back(item);
  } else if (dst != src) {
    throw InvalidArgument(
        fmt::format("{}: cohort render sets it to {}; remove it from the podTemplate (or use the "
                    "TrainingJob's own field for it)",
                    field, Show(dst)));
  }
}

}  // namespace

Json Labels(const TrainingJob& job) {
  Json labels = {{"app.kubernetes.io/name", job.name}};
  for (const auto& [k, v] : job.labels.items()) labels[k] = v;
  return labels;
}

Json Metadata(const TrainingJob& job, const std::string& name) {
  Json meta = {{"name", name}};
  if (!job.ns.empty()) meta["namespace"] = job.ns;
  meta["labels"] = Labels(job);
  return meta;
}

Json TokenEnv(const TrainingJob& job, const RenderOptions& options) {
  if (options.insecure_no_token) return nullptr;
  const std::string secret =
      options.token_secret.empty() ? job.name + "-token" : options.token_secret;
  return {{"name", env::kToken.name()},
          {"valueFrom", {{"secretKeyRef", {{"name", secret}, {"key", "token"}}}}}};
}

Json EnvValue(const std::string& name, const std::string& value) {
  return {{"name", name}, {"value", value}};
}

Json EnvField(const std::string& name, const std::string& field_path) {
  return {{"name", name}, {"valueFrom", {{"fieldRef", {{"fieldPath", field_path}}}}}};
}

void MergePodTemplate(const TrainingJob& job, Json& pod_template) {
  Json extra = job.pod_template;
  if (extra.empty()) return;
  const std::string field = "spec.podTemplate";
  if (extra.contains("spec") && extra["spec"].contains("containers")) {
    const Json containers = extra["spec"]["containers"];
    extra["spec"].erase("containers");
    if (!containers.is_array()) {
      throw InvalidArgument(field + ".spec.containers: must be a list");
    }
    for (size_t i = 0; i < containers.size(); ++i) {
      const std::string cfield = fmt::format("{}.spec.containers[{}]", field, i);
      const Json& c = containers[i];
      if (!c.is_object() || c.value("name", Json()) != "cohort") {
        throw InvalidArgument(fmt::format(
            "{}: only a container named cohort may be given (it is merged into the training "
            "container); sidecars are not supported",
            cfield));
      }
      Json rest = c;
      rest.erase("name");
      MergeInto(pod_template["spec"]["containers"][0], rest, cfield);
    }
  }
  MergeInto(pod_template, extra, field);
}

}  // namespace cohort::launcher::render
