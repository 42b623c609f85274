// The environment and command line Kubernetes gives a pod's container, resolved for running it
// as a local process: env value, valueFrom (fieldRef: metadata.name, namespace, uid, labels['k'],
// annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP;
// secretKeyRef and configMapKeyRef, optional or not), envFrom (secretRef, configMapRef, prefix),
// $(VAR) references in env values, command and args, HOSTNAME as the pod's hostname.
//
// Service names resolve to 127.0.0.1: every "<hostname>.<service>", "<service>.<namespace>"
// (either with ".svc[.cluster.local]" after it) and "<service>:<port>" of a Service in the pod's
// namespace that appears in an env `value` or an argument is replaced by 127.0.0.1 (a bare
// "<service>" is left alone: it is often the job's name too), and a port after it by a
// port the double picked once for that host and port, so two pods of one job that both name
// "job-0.job:29500" meet at the same 127.0.0.1 port while jobs of different tests never collide.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cohort::kube {

using Json = nlohmann::json;

// Reads a Secret or ConfigMap ("secrets"/"configmaps", namespace, name); nullopt when absent.
using ObjectLookup =
    std::function<std::optional<Json>(const std::string&, const std::string&, const std::string&)>;

// Maps "host:port" of a Service to one 127.0.0.1 port, the same for every pod.
class ServicePorts {
 public:
  int PortFor(const std::string& ns, const std::string& host, int port);

 private:
  std::mutex mu_;
  std::map<std::string, int> ports_;
};

struct PodCommand {
  std::vector<std::string> argv;           // command + args, $(VAR) expanded, hosts rewritten
  std::map<std::string, std::string> env;  // the container's env (without the host's)
  std::string error;                       // why it cannot run (then argv is empty)
};

// The first container of `pod`. services: the names of the Services in the pod's namespace.
PodCommand ResolvePodCommand(const Json& pod, const std::vector<std::string>& services,
                             const ObjectLookup& lookup, ServicePorts& ports);

// Kubernetes' $(VAR) references in env values, command and args: each $(NAME) that vars
// defines becomes its value, $$ is a $, and unknown references stay as written.
std::string ExpandVarRefs(const std::string& text, const std::map<std::string, std::string>& vars);

// Replaces Service host names in `text` as described above (exposed for unit tests).
std::string RewriteServiceHosts(const std::string& text, const std::string& ns,
                                const std::vector<std::string>& services, ServicePorts& ports);

}  // namespace cohort::kube
