// The Kubernetes a container's start sees, for the pods of Indexed Jobs that `cohort render`
// emits: the pods the Job controller creates (hostname, subdomain, labels, the completion-index
// annotation), their containers' environment (env values, the downward API, Secrets, service
// links, HOSTNAME, JOB_COMPLETION_INDEX), Kubernetes' $(VAR) expansion, and the DNS names
// headless Services give pods. No cluster: objects in, environments and argvs out. What it does
// not simulate (another fieldRef, a configMapKeyRef, a Secret that is missing) is a test failure.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/env.h"

namespace cohort::launcher::pods {

using Json = nlohmann::ordered_json;

// What render emitted (as kubectl applied it), plus Secrets the namespace already holds.
struct Cluster {
  Json list;                                   // a v1 List, as RenderTrainingJob returns it
  std::map<std::string, std::string> secrets;  // name -> its "token" key
};

// Pod `index` of an Indexed Job as the Job controller creates it, before its container starts.
struct Pod {
  std::string job;
  int index = 0;
  std::string ns;
  std::string name;       // <job>-<index>-<suffix>
  std::string hostname;   // <job>-<index>: the controller sets it for Indexed Jobs
  std::string subdomain;  // the template's: <hostname>.<subdomain> is its DNS name
  Json labels;            // the template's plus the controller's
  Json annotations;       // the template's plus the completion index
  Json container;         // containers[0]
};

// metadata.namespace, or "default".
std::string Namespace(const Json& obj);

// The item of that kind, name and namespace; nullptr when there is none.
const Json* Find(const Cluster& c, const std::string& kind, const std::string& name,
                 const std::string& ns);

// Every pod of an Indexed Job (index 0..completions-1); none for another kind of Job.
std::vector<Pod> PodsOf(const Json& job);

// Kubernetes' $(VAR) expansion (env values, command, args): $(NAME) of a variable defined
// before becomes its value, $$ a $, and anything else stays as written.
std::string Expand(const std::string& text, const env::Map& defined);

// The container's environment: service links, the runtime's HOSTNAME, the container's env in
// order (each value expanded against those before it), then the JOB_COMPLETION_INDEX the Job
// controller adds to an Indexed Job's containers unless they set it. Kubernetes exposes the
// pod's subdomain only through DNS (its FQDN), never as a variable, so there is none.
env::Map PodEnv(const Cluster& c, const Pod& pod);

// The container's argv: command then args, expanded against its env (HOSTNAME is the
// runtime's, which expansion does not see).
std::vector<std::string> PodArgv(const Pod& pod, const env::Map& env);

// The pod cluster DNS gives "<hostname>.<subdomain>" from namespace `ns`: a headless Service
// named <subdomain> that selects it, and a pod with that hostname and subdomain.
std::optional<Pod> Resolve(const Cluster& c, const std::string& host, const std::string& ns);

}  // namespace cohort::launcher::pods
