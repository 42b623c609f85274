#include "launcher/training_job.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <regex>

#include "common/error.h"

namespace cohort::launcher {
namespace {

using Json = nlohmann::ordered_json;

// Longest name whose derived names (<name>-worker-<i>, <name>-ps-<i>, <name>-token) stay
// within Kubernetes' 63-character DNS labels.
constexpr size_t kMaxNameLength = 48;

[[noreturn]] void Bad(const std::string& field, const std::string& msg) {
  throw InvalidArgument(fmt::format("{}: {}", field, msg));
}

std::string TypeName(const Json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_array()) return "a list";
  if (v.is_object()) return "a mapping";
  return "null";
}

void CheckKeys(const Json& obj, const std::string& path, const std::vector<std::string>& allowed) {
  for (const auto& [key, value] : obj.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      Bad(path.empty() ? key : path + "." + key,
          fmt::format("unknown field; {} has: {}", path.empty() ? "a TrainingJob" : path,
                      fmt::join(allowed, ", ")));
    }
  }
}

const Json& Object(const Json& v, const std::string& field) {
  if (!v.is_object()) Bad(field, fmt::format("must be a mapping, not {}", TypeName(v)));
  return v;
}

std::string String(const Json& v, const std::string& field) {
  if (!v.is_string()) Bad(field, fmt::format("must be a string, not {}", TypeName(v)));
  return v.get<std::string>();
}

// A program argument: strings, and numbers written without quotes (--epochs 2).
std::string Argument(const Json& v, const std::string& field) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  Bad(field, fmt::format("must be a string, not {}", TypeName(v)));
}

int Count(const Json& v, const std::string& field, int min, const std::string& example) {
  if (!v.is_number_integer() || v.get<int64_t>() < min || v.get<int64_t>() > 1000000) {
    Bad(field,
        fmt::format("is {}; it must be an integer >= {} ({})",
                    v.is_string() ? "'" + v.get<std::string>() + "'" : v.dump(), min, example));
  }
  return static_cast<int>(v.get<int64_t>());
}

// "N" (a string of digits) as a count, for nnodes and nprocPerNode given as strings.
int CountText(const std::string& text, const std::string& field, int min,
              const std::string& example) {
  if (text.empty() || text.size() > 7 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    Bad(field, fmt::format("is '{}'; it must be an integer >= {} ({})", text, min, example));
  }
  return Count(Json(std::stoi(text)), field, min, example);
}

void ParseNnodes(const Json& v, TrainingJob& job) {
  const std::string field = "spec.nnodes";
  const std::string how = "a node count N or \"MIN:MAX\", e.g. 2 or \"2:4\"";
  if (v.is_number_integer()) {
    job.min_nodes = job.max_nodes = Count(v, field, 1, how);
  } else if (v.is_string()) {
    const std::string text = v.get<std::string>();
    const auto colon = text.find(':');
    if (colon == std::string::npos) {
      job.min_nodes = job.max_nodes = CountText(text, field, 1, how);
    } else {
      job.min_nodes = CountText(text.substr(0, colon), field + " (MIN)", 1, how);
      job.max_nodes = CountText(text.substr(colon + 1), field + " (MAX)", 1, how);
      if (job.min_nodes > job.max_nodes) {
        Bad(field, fmt::format("is \"{}\": MIN is above MAX; write it as \"MIN:MAX\", e.g. "
                               "\"{}:{}\"",
                               text, job.max_nodes, job.min_nodes));
      }
    }
  } else {
    Bad(field, fmt::format("must be {}, not {}", how, TypeName(v)));
  }
  job.nnodes = job.min_nodes == job.max_nodes ? std::to_string(job.max_nodes)
                                              : fmt::format("{}:{}", job.min_nodes, job.max_nodes);
}

void ParseResources(const Json& v, TrainingJob& job) {
  Object(v, "spec.resources");
  CheckKeys(v, "spec.resources", {"gpus", "requests", "limits"});
  job.resources = Json::object();
  for (const char* part : {"requests", "limits"}) {
    if (!v.contains(part)) continue;
    const std::string field = fmt::format("spec.resources.{}", part);
    Json out = Json::object();
    for (const auto& [name, qty] : Object(v[part], field).items()) {
      if (!qty.is_string() && !qty.is_number()) {
        Bad(field + "." + name,
            fmt::format("must be a quantity such as \"4\" or 8Gi, not {}", TypeName(qty)));
      }
      out[name] = qty.is_string() ? qty.get<std::string>() : qty.dump();
    }
    job.resources[part] = out;
  }
  if (v.contains("gpus")) {
    const int gpus = Count(v["gpus"], "spec.resources.gpus", 0, "GPUs per pod, e.g. 4");
    if (job.resources.contains("limits") && job.resources["limits"].contains("nvidia.com/gpu")) {
      Bad("spec.resources.gpus", "and limits.nvidia.com/gpu are both set; keep one");
    }
    if (gpus > 0) job.resources["limits"]["nvidia.com/gpu"] = std::to_string(gpus);
  }
}

void ParseEnv(const Json& v, TrainingJob& job) {
  if (!v.is_array()) Bad("spec.env", "must be a list of {name, value} or {name, valueFrom}");
  job.env = Json::array();
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string field = fmt::format("spec.env[{}]", i);
    Object(v[i], field);
    CheckKeys(v[i], field, {"name", "value", "valueFrom"});
    if (!v[i].contains("name")) Bad(field + ".name", "is missing");
    const std::string name = String(v[i]["name"], field + ".name");
    if (std::find(kRenderedEnv.begin(), kRenderedEnv.end(), name) != kRenderedEnv.end()) {
      Bad(field, fmt::format("{} is set by cohort render from the spec's own fields; remove it "
                             "from spec.env",
                             name));
    }
    Json e = {{"name", name}};
    if (v[i].contains("value")) e["value"] = Argument(v[i]["value"], field + ".value");
    if (v[i].contains("valueFrom"))
      e["valueFrom"] = Object(v[i]["valueFrom"], field + ".valueFrom");
    job.env.push_back(e);
  }
}

void ParseMetadata(const Json& doc, TrainingJob& job) {
  if (!doc.contains("metadata")) Bad("metadata.name", "is missing: name the job, e.g. fmnist");
  const Json& meta = Object(doc["metadata"], "metadata");
  CheckKeys(meta, "metadata", {"name", "namespace", "labels", "annotations"});
  if (!meta.contains("name")) Bad("metadata.name", "is missing: name the job, e.g. fmnist");
  job.name = String(meta["name"], "metadata.name");
  static const std::regex kLabel{"[a-z]([-a-z0-9]*[a-z0-9])?"};
  if (job.name.size() > kMaxNameLength || !std::regex_match(job.name, kLabel)) {
    Bad("metadata.name", fmt::format("'{}' must be lower-case letters, digits and '-', start "
                                     "with a letter, end with a letter or digit, and be at most "
                                     "{} characters (it names pods and Services)",
                                     job.name, kMaxNameLength));
  }
  if (meta.contains("namespace")) job.ns = String(meta["namespace"], "metadata.namespace");
  job.labels = Json::object();
  if (meta.contains("labels")) {
    for (const auto& [k, val] : Object(meta["labels"], "metadata.labels").items()) {
      job.labels[k] = String(val, "metadata.labels." + k);
    }
  }
}

void ParseCommand(const Json& spec, TrainingJob& job) {
  if (!spec.contains("command") || !spec["command"].is_array() || spec["command"].empty()) {
    Bad("spec.command",
        "must list the training program and its arguments, e.g. "
        "[/opt/cohort/bin/fashion_mnist]");
  }
  for (size_t i = 0; i < spec["command"].size(); ++i) {
    job.program.push_back(Argument(spec["command"][i], fmt::format("spec.command[{}]", i)));
  }
  if (spec.contains("args")) {
    if (!spec["args"].is_array()) Bad("spec.args", "must be a list, e.g. [--epochs, \"2\"]");
    for (size_t i = 0; i < spec["args"].size(); ++i) {
      job.program.push_back(Argument(spec["args"][i], fmt::format("spec.args[{}]", i)));
    }
  }
}

void ParseScalars(const Json& spec, TrainingJob& job) {
  if (!spec.contains("image") || !spec["image"].is_string() ||
      spec["image"].get<std::string>().empty()) {
    Bad("spec.image", "is missing: set it to the training image, e.g. cohort-train:0.1.0");
  }
  job.image = spec["image"].get<std::string>();
  if (spec.contains("nnodes")) ParseNnodes(spec["nnodes"], job);
  job.nnodes = job.nnodes.empty() ? "1" : job.nnodes;
  if (spec.contains("nprocPerNode")) {
    const Json& v = spec["nprocPerNode"];
    const std::string how = "workers per pod N, or auto (one per GPU, else per CPU core)";
    job.nproc_per_node =
        v.is_string() && v.get<std::string>() == "auto"
            ? "auto"
            : std::to_string(v.is_string()
                                 ? CountText(v.get<std::string>(), "spec.nprocPerNode", 1, how)
                                 : Count(v, "spec.nprocPerNode", 1, how));
  }
  if (spec.contains("backend")) {
    job.backend = String(spec["backend"], "spec.backend");
    if (std::find(kTrainingJobBackends.begin(), kTrainingJobBackends.end(), job.backend) ==
        kTrainingJobBackends.end()) {
      Bad("spec.backend", fmt::format("'{}' is not a backend; use one of: {}", job.backend,
                                      fmt::join(kTrainingJobBackends, ", ")));
    }
  }
  if (spec.contains("checkpointURI")) {
    job.checkpoint_uri = String(spec["checkpointURI"], "spec.checkpointURI");
  }
  if (spec.contains("maxRestarts")) {
    job.max_restarts = Count(spec["maxRestarts"], "spec.maxRestarts", 0, "e.g. 3");
  }
  if (spec.contains("psServers"))
    job.ps_servers = Count(spec["psServers"], "spec.psServers", 0, "e.g. 2");
  if (spec.contains("register")) job.register_name = String(spec["register"], "spec.register");
  if (spec.contains("suspend")) {
    if (!spec["suspend"].is_boolean()) Bad("spec.suspend", "must be true or false");
    job.suspend = spec["suspend"].get<bool>();
  }
}

// Rules between fields, once each one is valid on its own.
void CheckCombination(const TrainingJob& job) {
  if (job.backend == "ps" && job.ps_servers == 0) {
    Bad("spec.psServers", "backend ps needs parameter servers: set psServers to 1 or more");
  }
  if (job.backend != "ps" && job.ps_servers > 0) {
    Bad("spec.psServers", fmt::format("is only for backend ps (this job's is {}); remove it or "
                                      "set backend: ps",
                                      job.backend));
  }
  if (job.backend == "mpi" && job.min_nodes != job.max_nodes) {
    Bad("spec.nnodes", fmt::format("is \"{}\", but mpirun starts a fixed world; give backend mpi "
                                   "a node count N",
                                   job.nnodes));
  }
  if (job.backend == "mpi" && job.nproc_per_node == "auto") {
    Bad("spec.nprocPerNode", "is auto, but an MPIJob needs its slots per worker; give a number");
  }
}

}  // namespace

TrainingJob ParseTrainingJob(const Json& doc) {
  Object(doc, "the TrainingJob");
  CheckKeys(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  if (doc.value("apiVersion", Json()) != "cohort.dev/v1alpha1" ||
      doc.value("kind", Json()) != "TrainingJob") {
    Bad("apiVersion/kind",
        fmt::format("are {}/{}; write apiVersion: cohort.dev/v1alpha1 and "
                    "kind: TrainingJob",
                    doc.value("apiVersion", Json()).dump(), doc.value("kind", Json()).dump()));
  }
  TrainingJob job;
  ParseMetadata(doc, job);
  if (!doc.contains("spec")) Bad("spec", "is missing: give at least spec.image and spec.command");
  const Json& spec = Object(doc["spec"], "spec");
  CheckKeys(
      spec, "spec",
      {"image", "command", "args", "nnodes", "nprocPerNode", "backend", "resources",
       "checkpointURI", "maxRestarts", "psServers", "register", "suspend", "env", "podTemplate"});
  ParseScalars(spec, job);
  ParseCommand(spec, job);
  job.resources = Json::object();
  if (spec.contains("resources")) ParseResources(spec["resources"], job);
  job.env = Json::array();
  if (spec.contains("env")) ParseEnv(spec["env"], job);
  job.pod_template = Json::object();
  if (spec.contains("podTemplate")) {
    const Json& t = Object(spec["podTemplate"], "spec.podTemplate");
    CheckKeys(t, "spec.podTemplate", {"metadata", "spec"});
    if (t.contains("metadata")) {
      CheckKeys(Object(t["metadata"], "spec.podTemplate.metadata"), "spec.podTemplate.metadata",
                {"labels", "annotations"});
    }
    if (t.contains("spec")) Object(t["spec"], "spec.podTemplate.spec");
    job.pod_template = t;
  }
  CheckCombination(job);
  return job;
}

}  // namespace cohort::launcher
