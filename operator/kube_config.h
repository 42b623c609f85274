// Where the Kubernetes API server is and how to authenticate to it, from the two places a
// client finds that: a kubeconfig file (as kubectl reads it) or, inside a pod, the service
// account's files and KUBERNETES_SERVICE_HOST/PORT.
#pragma once

#include <string>

#include "common/http.h"

namespace cohort::k8s {

struct KubeConfig {
  std::string server;  // https://host:port, or http:// (a test double)
  std::string token;   // bearer token; empty: none
  http::Options::Tls tls;
  std::string ns = "default";  // the context's namespace, or the pod's
  std::string source;          // "kubeconfig F context C" or "in-cluster", for messages
};

// The service account's directory in every pod.
inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

// In a pod: https://HOST:PORT (the values of KUBERNETES_SERVICE_HOST/PORT) with the token,
// ca.crt and namespace files of `sa_dir`. Throws InvalidArgument (one line: not in a pod, or
// which file is missing) when they are absent.
KubeConfig InClusterConfig(const std::string& sa_dir, const std::string& host,
                           const std::string& port);
// The same from the process's environment and kServiceAccountDir.
KubeConfig InClusterConfig();

// A kubeconfig's text: the context `context` (empty: current-context), its cluster's server,
// certificate-authority(-data) and insecure-skip-tls-verify, its user's token (or tokenFile),
// client-certificate(-data) and client-key(-data), and its namespace. Relative file names are
// relative to `dir` (the kubeconfig's directory). Throws InvalidArgument naming `path` and the
// missing or wrong entry (an exec or auth-provider user is refused: not supported).
KubeConfig ParseKubeconfig(const std::string& text, const std::string& path, const std::string& dir,
                           const std::string& context = "");

// Reads the file and parses it as above.
KubeConfig LoadKubeconfig(const std::string& path, const std::string& context = "");

// The operator's choice: --kubeconfig when given, else $KUBECONFIG, else in-cluster.
KubeConfig ResolveConfig(const std::string& kubeconfig, const std::string& context);

}  // namespace cohort::k8s
