#include "tests/launcher/indexed_job_pods.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>

#include "tests/util/kube/pod_env.h"

namespace cohort::launcher::pods {
namespace {

// The kubelet's service links give every pod the API server's Service; render's own Services
// are headless (clusterIP None), which get no variables.
const env::Map kServiceLinks = {{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                                {"KUBERNETES_SERVICE_PORT", "443"},
                                {"KUBERNETES_SERVICE_PORT_HTTPS", "443"},
                                {"KUBERNETES_PORT", "tcp://10.96.0.1:443"},
                                {"KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"},
                                {"KUBERNETES_PORT_443_TCP_PROTO", "tcp"},
                                {"KUBERNETES_PORT_443_TCP_PORT", "443"},
                                {"KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"}};

constexpr const char* kIndexKey = "batch.kubernetes.io/job-completion-index";

// Pod `index` as the Job controller creates it from the Job's template.
Pod MakePod(const Json& job, int index) {
  const Json& tmpl = job.at("spec").at("template");
  Pod p;
  p.job = job["metadata"]["name"].get<std::string>();
  p.index = index;
  p.ns = Namespace(job);
  p.hostname = tmpl["spec"].value("hostname", fmt::format("{}-{}", p.job, index));
  p.name = p.hostname + "-x7k2p";
  p.subdomain = tmpl["spec"].value("subdomain", std::string());
  p.labels = tmpl["metadata"].value("labels", Json::object());
  p.labels["batch.kubernetes.io/controller-uid"] = "uid-" + p.job;
  p.labels["batch.kubernetes.io/job-name"] = p.job;
  p.labels["controller-uid"] = "uid-" + p.job;
  p.labels["job-name"] = p.job;
  p.labels[kIndexKey] = std::to_string(index);
  p.annotations = tmpl["metadata"].value("annotations", Json::object());
  p.annotations[kIndexKey] = std::to_string(index);
  p.container = tmpl["spec"]["containers"][0];
  return p;
}

// The downward API's fieldRef, for the fields a pod's own metadata has.
std::string FieldRef(const Pod& pod, const std::string& path) {
  if (path == "metadata.name") return pod.name;
  if (path == "metadata.namespace") return pod.ns;
  static const std::regex kMap{R"(metadata\.(labels|annotations)\['([^']+)'\])"};
  std::smatch m;
  if (std::regex_match(path, m, kMap)) {
    const Json& from = m[1] == "labels" ? pod.labels : pod.annotations;
    return from.value(m[2].str(), std::string());  // Kubernetes gives "" for a missing key
  }
  ADD_FAILURE() << pod.name << ": fieldRef " << path << " is not simulated";
  return "";
}

// A secretKeyRef's value; a pod whose Secret or key is missing would not start.
std::string SecretKeyRef(const Cluster& c, const Pod& pod, const Json& ref) {
  const std::string name = ref.at("name").get<std::string>();
  const std::string key = ref.at("key").get<std::string>();
  if (const Json* s = Find(c, "Secret", name, pod.ns)) {
    if (s->contains("stringData") && (*s)["stringData"].contains(key)) {
      return (*s)["stringData"][key].get<std::string>();
    }
  } else if (auto it = c.secrets.find(name); it != c.secrets.end() && key == "token") {
    return it->second;
  }
  ADD_FAILURE() << pod.name << " would not start (CreateContainerConfigError): no key " << key
                << " in Secret " << pod.ns << "/" << name;
  return "";
}

}  // namespace

std::string Namespace(const Json& obj) {
  return obj.at("metadata").value("namespace", std::string("default"));
}

const Json* Find(const Cluster& c, const std::string& kind, const std::string& name,
                 const std::string& ns) {
  for (const Json& item : c.list.at("items")) {
    if (item["kind"] == kind && item["metadata"]["name"] == name && Namespace(item) == ns) {
      return &item;
    }
  }
  return nullptr;
}

std::vector<Pod> PodsOf(const Json& job) {
  std::vector<Pod> pods;
  if (job["spec"].value("completionMode", std::string()) != "Indexed") return pods;
  for (int i = 0; i < job["spec"]["completions"].get<int>(); ++i) pods.push_back(MakePod(job, i));
  return pods;
}

env::Map PodEnv(const Cluster& c, const Pod& pod) {
  env::Map defined = kServiceLinks;
  Json entries = pod.container.value("env", Json::array());
  bool has_index = false;
  for (const Json& e : entries) has_index = has_index || e["name"] == "JOB_COMPLETION_INDEX";
  if (!has_index) {
    entries.push_back(
        {{"name", "JOB_COMPLETION_INDEX"},
         {"valueFrom",
          {{"fieldRef", {{"fieldPath", fmt::format("metadata.annotations['{}']", kIndexKey)}}}}}});
  }
  for (const Json& e : entries) {
    const std::string name = e.at("name").get<std::string>();
    if (e.contains("value")) {
      defined[name] = kube::ExpandVarRefs(e["value"].get<std::string>(), defined);
    } else if (e.contains("valueFrom") && e["valueFrom"].contains("fieldRef")) {
      defined[name] = FieldRef(pod, e["valueFrom"]["fieldRef"].at("fieldPath").get<std::string>());
    } else if (e.contains("valueFrom") && e["valueFrom"].contains("secretKeyRef")) {
      defined[name] = SecretKeyRef(c, pod, e["valueFrom"]["secretKeyRef"]);
    } else {
      ADD_FAILURE() << pod.name << ": env " << e.dump() << " is not simulated";
    }
  }
  env::Map env = defined;
  env.emplace("HOSTNAME", pod.hostname);  // the runtime's, unless the container set one
  return env;
}

std::vector<std::string> PodArgv(const Pod& pod, const env::Map& env) {
  env::Map defined = env;
  if (!pod.container.contains("env") ||
      std::none_of(pod.container["env"].begin(), pod.container["env"].end(),
                   [](const Json& e) { return e["name"] == "HOSTNAME"; })) {
    defined.erase("HOSTNAME");
  }
  std::vector<std::string> argv;
  for (const char* part : {"command", "args"}) {
    for (const Json& a : pod.container.value(part, Json::array())) {
      argv.push_back(kube::ExpandVarRefs(a.get<std::string>(), defined));
    }
  }
  return argv;
}

std::optional<Pod> Resolve(const Cluster& c, const std::string& host, const std::string& ns) {
  const size_t dot = host.find('.');
  if (dot == std::string::npos || host.find('.', dot + 1) != std::string::npos) return {};
  const std::string hostname = host.substr(0, dot), subdomain = host.substr(dot + 1);
  const Json* service = Find(c, "Service", subdomain, ns);
  if (!service || (*service)["spec"].value("clusterIP", std::string()) != "None") return {};
  for (const Json& item : c.list["items"]) {
    if (item["kind"] != "Job" || Namespace(item) != ns) continue;
    for (const Pod& pod : PodsOf(item)) {
      bool selected = true;
      for (const auto& [k, v] : (*service)["spec"]["selector"].items()) {
        selected = selected && pod.labels.value(k, Json()) == v;
      }
      if (selected && pod.hostname == hostname && pod.subdomain == subdomain) return pod;
    }
  }
  return {};
}

}  // namespace cohort::launcher::pods
