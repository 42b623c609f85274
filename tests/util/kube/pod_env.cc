#include "tests/util/kube/pod_env.h"

#include <regex>

#include "common/base64.h"
#include "common/net.h"

namespace cohort::kube {
namespace {

// "metadata.labels['k']" -> k
std::optional<std::string> Bracketed(const std::string& path, const std::string& prefix) {
  if (path.rfind(prefix + "['", 0) != 0 || path.size() < prefix.size() + 4) return std::nullopt;
  return path.substr(prefix.size() + 2, path.size() - prefix.size() - 4);
}

std::optional<std::string> FieldRef(const Json& pod, const std::string& path) {
  const Json& meta = pod["metadata"];
  if (path == "metadata.name") return meta.value("name", "");
  if (path == "metadata.namespace") return meta.value("namespace", "");
  if (path == "metadata.uid") return meta.value("uid", "");
  if (path == "spec.nodeName") return std::string("127.0.0.1");
  if (path == "spec.serviceAccountName") return pod["spec"].value("serviceAccountName", "default");
  if (path == "status.podIP" || path == "status.hostIP") return std::string("127.0.0.1");
  for (const char* where : {"labels", "annotations"}) {
    if (auto key = Bracketed(path, std::string("metadata.") + where)) {
      const Json m = meta.value(where, Json::object());
      return m.value(*key, "");
    }
  }
  return std::nullopt;
}

std::optional<std::string> KeyRef(const Json& ref, const std::string& kind, const std::string& ns,
                                  const ObjectLookup& lookup, std::string& error) {
  const std::string name = ref.value("name", ""), key = ref.value("key", "");
  auto obj = lookup(kind, ns, name);
  const bool secret = kind == "secrets";
  const Json data = obj ? obj->value("data", Json::object()) : Json::object();
  if (!data.contains(key)) {
    if (!ref.value("optional", false)) {
      error = std::string(secret ? "secret" : "configmap") + " \"" + name + "\" " +
              (obj ? "has no key \"" + key + "\"" : "not found");
    }
    return std::nullopt;
  }
  const std::string v = data[key];
  return secret ? Base64Decode(v, "data." + key + " of secret " + name) : v;
}


void AddEnvFrom(const Json& container, const std::string& ns, const ObjectLookup& lookup,
                PodCommand& cmd) {
  for (const auto& from : container.value("envFrom", Json::array())) {
    const std::string prefix = from.value("prefix", "");
    for (const char* kind : {"secretRef", "configMapRef"}) {
      if (!from.contains(kind)) continue;
      const bool secret = std::string(kind) == "secretRef";
      auto obj = lookup(secret ? "secrets" : "configmaps", ns, from[kind].value("name", ""));
      if (!obj) {
        if (!from[kind].value("optional", false)) {
          cmd.error = std::string(secret ? "secret" : "configmap") + " \"" +
                      from[kind].value("name", "") + "\" not found";
        }
        continue;
      }
      const Json data = obj->value("data", Json::object());
      for (const auto& [k, v] : data.items()) {
        const std::string value = v.get<std::string>();
        cmd.env[prefix + k] =
            secret ? Base64Decode(value, "data." + k + " of secret " + from[kind].value("name", ""))
                   : value;
      }
    }
  }
}

}  // namespace

std::string ExpandVarRefs(const std::string& text, const std::map<std::string, std::string>& vars) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '$') {
      out += '$';
      ++i;
      continue;
    }
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '(') {
      const size_t close = text.find(')', i);
      if (close != std::string::npos) {
        auto it = vars.find(text.substr(i + 2, close - i - 2));
        if (it != vars.end()) {
          out += it->second;
          i = close;
          continue;
        }
      }
    }
    out += text[i];
  }
  return out;
}

int ServicePorts::PortFor(const std::string& ns, const std::string& host, int port) {
  std::lock_guard<std::mutex> lock(mu_);
  int& p = ports_[ns + "/" + host + ":" + std::to_string(port)];
  if (p == 0) p = net::FreePort();
  return p;
}

std::string RewriteServiceHosts(const std::string& text, const std::string& ns,
                                const std::vector<std::string>& services, ServicePorts& ports) {
  std::string out = text;
  for (const auto& svc : services) {
    // [<hostname>.]<service>[.<ns>[.svc[.cluster.local]]][:port], whole words only.
    const std::regex re("(^|[^-a-z0-9.])(([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)?" + svc + "(\\." + ns +
                        "(\\.svc(\\.cluster\\.local)?)?)?)(:([0-9]+))?(?![-a-z0-9.])");
    std::string rewritten;
    auto begin = std::sregex_iterator(out.begin(), out.end(), re);
    size_t last = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      const std::smatch& m = *it;
      if (!m[3].matched && !m[5].matched && !m[9].matched) continue;  // a bare word: not a host
      rewritten += out.substr(last, m.position(0) - last) + m[1].str() + "127.0.0.1";
      if (m[9].matched) {
        const std::string host = m[3].matched ? m[3].str() + svc : svc;
        rewritten += ":" + std::to_string(ports.PortFor(ns, host, std::stoi(m[9].str())));
      }
      last = m.position(0) + m.length(0);
    }
    out = rewritten + out.substr(last);
  }
  return out;
}

PodCommand ResolvePodCommand(const Json& pod, const std::vector<std::string>& services,
                             const ObjectLookup& lookup, ServicePorts& ports) {
  PodCommand cmd;
  const Json containers = pod["spec"].value("containers", Json::array());
  if (containers.empty()) {
    cmd.error = "the pod has no containers";
    return cmd;
  }
  const Json& c = containers[0];
  const std::string ns = pod["metadata"].value("namespace", "");
  std::string hostname = pod["spec"].value("hostname", pod["metadata"].value("name", ""));
  cmd.env["HOSTNAME"] = hostname;
  AddEnvFrom(c, ns, lookup, cmd);
  for (const auto& e : c.value("env", Json::array())) {
    const std::string name = e.value("name", "");
    std::optional<std::string> value;
    if (e.contains("value")) {
      value =
          RewriteServiceHosts(ExpandVarRefs(e["value"].get<std::string>(), cmd.env), ns, services, ports);
    }
    const Json from = e.value("valueFrom", Json::object());
    if (from.contains("fieldRef")) {
      value = FieldRef(pod, from["fieldRef"].value("fieldPath", ""));
      if (!value) cmd.error = "env " + name + ": unsupported fieldRef";
    } else if (from.contains("secretKeyRef")) {
      value = KeyRef(from["secretKeyRef"], "secrets", ns, lookup, cmd.error);
    } else if (from.contains("configMapKeyRef")) {
      value = KeyRef(from["configMapKeyRef"], "configmaps", ns, lookup, cmd.error);
    } else if (!e.contains("value")) {
      value = "";
    }
    if (value) cmd.env[name] = *value;
  }
  if (!cmd.error.empty()) return cmd;
  for (const char* part : {"command", "args"}) {
    for (const auto& a : c.value(part, Json::array())) {
      cmd.argv.push_back(
          RewriteServiceHosts(ExpandVarRefs(a.get<std::string>(), cmd.env), ns, services, ports));
    }
  }
  if (!c.contains("command") || cmd.argv.empty()) {
    cmd.argv.clear();
    cmd.error = "container " + c.value("name", "") +
                " has no command: the double runs the command itself (images are ignored)";
  }
  return cmd;
}

}  // namespace cohort::kube
