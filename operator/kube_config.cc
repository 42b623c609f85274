#include "operator/kube_config.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "common/base64.h"
#include "common/env.h"
#include "common/error.h"
#include "launcher/yaml_json.h"

namespace cohort::k8s {
namespace {

using Json = nlohmann::ordered_json;

bool ReadText(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  *out = text.str();
  return true;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string Resolve(const std::string& dir, const std::string& file) {
  if (file.empty() || file[0] == '/' || dir.empty()) return file;
  return dir + "/" + file;
}

// The entry named `name` of the kubeconfig's list `list` ("clusters", "users", "contexts"):
// its `key` object ("cluster", "user", "context").
const Json& Named(const Json& doc, const std::string& list, const std::string& key,
                  const std::string& name, const std::string& path) {
  if (doc.contains(list) && doc[list].is_array()) {
    for (const Json& entry : doc[list]) {
      if (entry.value("name", "") == name && entry.contains(key) && entry[key].is_object())
        return entry[key];
    }
  }
  throw InvalidArgument(fmt::format("kubeconfig {}: no {} named '{}' in {}; check the context",
                                    path, key, name, list));
}

std::string Str(const Json& o, const std::string& key) {
  return o.contains(key) && o[key].is_string() ? o[key].get<std::string>() : "";
}

void ReadCluster(const Json& cluster, const std::string& path, const std::string& dir,
                 KubeConfig* config) {
  config->server = Str(cluster, "server");
  while (!config->server.empty() && config->server.back() == '/') config->server.pop_back();
  if (config->server.rfind("https://", 0) != 0 && config->server.rfind("http://", 0) != 0) {
    throw InvalidArgument(fmt::format(
        "kubeconfig {}: the cluster's server '{}' is not an http(s):// URL", path, config->server));
  }
  config->tls.ca_file = Resolve(dir, Str(cluster, "certificate-authority"));
  const std::string ca_data = Str(cluster, "certificate-authority-data");
  if (!ca_data.empty()) {
    config->tls.ca_pem =
        Base64Decode(ca_data, "kubeconfig " + path + ": certificate-authority-data");
  }
  config->tls.insecure_skip_verify = cluster.value("insecure-skip-tls-verify", false);
}

void ReadUser(const Json& user, const std::string& path, const std::string& dir,
              KubeConfig* config) {
  for (const char* unsupported : {"exec", "auth-provider", "username"}) {
    if (user.contains(unsupported)) {
      throw InvalidArgument(fmt::format(
          "kubeconfig {}: the user's '{}' is not supported; use a token or a client certificate",
          path, unsupported));
    }
  }
  config->token = Str(user, "token");
  const std::string token_file = Resolve(dir, Str(user, "tokenFile"));
  if (config->token.empty() && !token_file.empty()) {
    if (!ReadText(token_file, &config->token)) {
      throw InvalidArgument(
          fmt::format("kubeconfig {}: cannot read the user's tokenFile {}", path, token_file));
    }
    config->token = Trimmed(config->token);
  }
  auto& tls = config->tls;
  tls.cert_file = Resolve(dir, Str(user, "client-certificate"));
  tls.key_file = Resolve(dir, Str(user, "client-key"));
  const std::string what = "kubeconfig " + path + ": ";
  if (const std::string d = Str(user, "client-certificate-data"); !d.empty())
    tls.cert_pem = Base64Decode(d, what + "client-certificate-data");
  if (const std::string d = Str(user, "client-key-data"); !d.empty())
    tls.key_pem = Base64Decode(d, what + "client-key-data");
  const bool cert = !tls.cert_file.empty() || !tls.cert_pem.empty();
  const bool key = !tls.key_file.empty() || !tls.key_pem.empty();
  if (cert != key) {
    throw InvalidArgument(what +
                          "the user has a client certificate without its key (or the "
                          "other way round); give both");
  }
}

}  // namespace

KubeConfig InClusterConfig() {
  return InClusterConfig(kServiceAccountDir, env::kKubernetesServiceHost.Str(""),
                         env::kKubernetesServicePort.Str(""));
}

KubeConfig InClusterConfig(const std::string& sa_dir, const std::string& host,
                           const std::string& port) {
  if (host.empty() || port.empty()) {
    throw InvalidArgument(
        "not in a pod (KUBERNETES_SERVICE_HOST/PORT unset) and no kubeconfig: pass --kubeconfig "
        "FILE or set KUBECONFIG");
  }
  KubeConfig config;
  const bool v6 = host.find(':') != std::string::npos;
  config.server = fmt::format("https://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", port);
  if (!ReadText(sa_dir + "/token", &config.token)) {
    throw InvalidArgument(
        fmt::format("in a pod but cannot read the service account's token {}/token; is "
                    "automountServiceAccountToken off?",
                    sa_dir));
  }
  config.token = Trimmed(config.token);
  config.tls.ca_file = sa_dir + "/ca.crt";
  std::string ns;
  if (ReadText(sa_dir + "/namespace", &ns) && !Trimmed(ns).empty()) config.ns = Trimmed(ns);
  config.source = "in-cluster " + config.server;
  return config;
}

KubeConfig ParseKubeconfig(const std::string& text, const std::string& path, const std::string& dir,
                           const std::string& context) {
  const Json doc = launcher::YamlToJson(text, "kubeconfig " + path);
  if (!doc.is_object()) throw InvalidArgument("kubeconfig " + path + " is not a mapping");
  const std::string name = context.empty() ? Str(doc, "current-context") : context;
  if (name.empty()) {
    throw InvalidArgument(fmt::format(
        "kubeconfig {} has no current-context; set one (kubectl config use-context) or pass "
        "--context",
        path));
  }
  const Json& ctx = Named(doc, "contexts", "context", name, path);
  KubeConfig config;
  ReadCluster(Named(doc, "clusters", "cluster", Str(ctx, "cluster"), path), path, dir, &config);
  if (!Str(ctx, "user").empty())
    ReadUser(Named(doc, "users", "user", Str(ctx, "user"), path), path, dir, &config);
  if (!Str(ctx, "namespace").empty()) config.ns = Str(ctx, "namespace");
  config.source = fmt::format("kubeconfig {} context {}", path, name);
  return config;
}

KubeConfig LoadKubeconfig(const std::string& path, const std::string& context) {
  std::string text;
  if (!ReadText(path, &text)) {
    throw InvalidArgument("cannot read the kubeconfig " + path + "; check --kubeconfig");
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  return ParseKubeconfig(text, path, dir, context);
}

KubeConfig ResolveConfig(const std::string& kubeconfig, const std::string& context) {
  if (!kubeconfig.empty()) return LoadKubeconfig(kubeconfig, context);
  // KUBECONFIG may list several files (':'); the first is the one we read.
  if (const auto env = env::kKubeconfig.Get()) {
    return LoadKubeconfig(env->substr(0, env->find(':')), context);
  }
  return InClusterConfig();
}

}  // namespace cohort::k8s
