#include "launcher/render.h"

#include <fmt/format.h>

#include <regex>

#include "common/env.h"
#include "common/error.h"
#include "common/hex.h"
#include "launcher/render_parts.h"
#include "launcher/yaml_json.h"

namespace cohort::launcher {
namespace {

using render::Json;

Json SecretDoc(const TrainingJob& job, const std::string& token) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", render::Metadata(job, job.name + "-token")},
          {"type", "Opaque"},
          {"stringData", {{"token", token}}}};
}

// Headless, and publishing pods before they are ready: the launchers resolve node 0 (and the
// workers the ps servers) as they start, without readiness probes.
Json HeadlessService(const TrainingJob& job, const std::string& name, const std::string& port_name,
                     int port) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", render::Metadata(job, name)},
          {"spec",
           {{"clusterIP", "None"},
            {"publishNotReadyAddresses", true},
            {"selector", {{"batch.kubernetes.io/job-name", name}}},
            {"ports",
             {{{"name", port_name}, {"port", port}, {"targetPort", port}, {"protocol", "TCP"}}}}}}};
}

// Replaces a pod lost to a disruption (preemption, eviction, drain) without counting it.
Json IgnoreDisruptions() {
  return {{"action", "Ignore"},
          {"onPodConditions", {{{"type", "DisruptionTarget"}, {"status", "True"}}}}};
}

// An Indexed Job of `count` pods named <name>-<index>, reachable as <name>-<index>.<name>;
// `policy` (backoffLimit, podFailurePolicy, ...) goes into its spec before the template.
Json IndexedJob(const TrainingJob& job, const std::string& name, int count, const Json& policy,
                Json container) {
  Json pod = {{"metadata", {{"labels", render::Labels(job)}}},
              {"spec",
               {{"subdomain", name},
                {"restartPolicy", "Never"},  // required by podFailurePolicy
                {"terminationGracePeriodSeconds", render::kTerminationGraceSeconds},
                {"containers", Json::array({std::move(container)})}}}};
  render::MergePodTemplate(job, pod);
  Json spec = {{"completionMode", "Indexed"}, {"completions", count}, {"parallelism", count}};
  for (const auto& [k, v] : policy.items()) spec[k] = v;
  if (job.suspend) spec["suspend"] = true;
  spec["template"] = std::move(pod);
  return {{"apiVersion", "batch/v1"},
          {"kind", "Job"},
          {"metadata", render::Metadata(job, name)},
          {"spec", std::move(spec)}};
}

std::string PsAddresses(const TrainingJob& job) {
  std::string out;
  const std::string service = job.name + "-ps";
  for (int i = 0; i < job.ps_servers; ++i) {
    out += fmt::format("{}{}-{}.{}:{}", i ? "," : "", service, i, service, render::kPsPort);
  }
  return out;
}

Json WorkerEnv(const TrainingJob& job, const RenderOptions& o) {
  Json env = Json::array();
  env.push_back(render::EnvValue(env::kNNodes.name(), job.nnodes));
  env.push_back(render::EnvValue(env::kNprocPerNode.name(), job.nproc_per_node));
  env.push_back(render::EnvValue(env::kRdzvEndpoint.name(),
                                 fmt::format("{}-0.{}:{}", job.name, job.name, render::kRdzvPort)));
  env.push_back(
      render::EnvField(env::kRunId.name(), "metadata.labels['batch.kubernetes.io/job-name']"));
  if (Json token = render::TokenEnv(job, o); !token.is_null()) env.push_back(token);
  if (job.backend != "auto") env.push_back(render::EnvValue(env::kBackend.name(), job.backend));
  if (job.ps_servers > 0) env.push_back(render::EnvValue(env::kPsServers.name(), PsAddresses(job)));
  if (job.max_restarts >= 0) {
    env.push_back(render::EnvValue(env::kMaxRestarts.name(), std::to_string(job.max_restarts)));
  }
  if (!job.checkpoint_uri.empty()) {
    env.push_back(render::EnvValue(env::kCheckpointUri.name(), job.checkpoint_uri));
  }
  if (!job.register_name.empty())
    env.push_back(render::EnvValue(env::kRegister.name(), job.register_name));
  for (const Json& e : job.env) env.push_back(e);
  return env;
}

// The training nodes: each pod runs `cohort launch -- PROGRAM`, which reads the rest from env.
Json WorkerJob(const TrainingJob& job, const RenderOptions& o) {
  Json command = {"cohort", "launch"};
  // Without a token the launcher refuses a store other machines reach, unless told.
  if (o.insecure_no_token) command.push_back("--insecure-store");
  command.push_back("--");
  for (const std::string& a : job.program) command.push_back(a);
  Json container = {
      {"name", "cohort"},
      {"image", job.image},
      {"command", command},
      {"ports", {{{"name", "rdzv"}, {"containerPort", render::kRdzvPort}, {"protocol", "TCP"}}}},
      {"env", WorkerEnv(job, o)}};
  if (!job.resources.empty()) container["resources"] = job.resources;
  // cohort restarts the worker group itself; Kubernetes must not restart a launcher that has
  // given up. Exit 3 (rendezvous failed) counts against backoffLimit; any other failure (a
  // worker's code once the restarts are used up, 2 for bad usage, 137 for OOM) fails the Job.
  Json policy = {
      {"backoffLimit", 2},
      {"podFailurePolicy",
       {{"rules",
         {IgnoreDisruptions(),
          {{"action", "FailJob"},
           {"onExitCodes",
            {{"containerName", "cohort"}, {"operator", "NotIn"}, {"values", {0, 3}}}}}}}}}};
  // With MIN:MAX nodes the job is done when node 0 is, even if some indexes never ran.
  if (job.min_nodes != job.max_nodes) {
    policy["successPolicy"] = {{"rules", {{{"succeededIndexes", "0"}}}}};
  }
  return IndexedJob(job, job.name, job.max_nodes, policy, std::move(container));
}

// The parameter servers: shard i is pod <name>-ps-<i>, listening on kPsPort.
Json PsJob(const TrainingJob& job, const RenderOptions& o) {
  const std::string name = job.name + "-ps";
  Json env = Json::array();
  env.push_back(render::EnvField(
      "PS_SHARD", "metadata.annotations['batch.kubernetes.io/job-completion-index']"));
  if (Json token = render::TokenEnv(job, o); !token.is_null()) env.push_back(token);
  Json command = {"cohort",  "ps-server",   "--port",   std::to_string(render::kPsPort),
                  "--shard", "$(PS_SHARD)", "--shards", std::to_string(job.ps_servers)};
  if (o.insecure_no_token) command.push_back("--insecure");  // else refused without a token
  Json container = {
      {"name", "cohort"},
      {"image", job.image},
      {"command", command},
      {"ports", {{{"name", "ps"}, {"containerPort", render::kPsPort}, {"protocol", "TCP"}}}},
      {"env", env}};
  // A server that fails has lost its shard's state: fail the Job rather than retry it.
  const Json policy = {{"backoffLimit", 0},
                       {"podFailurePolicy", {{"rules", {IgnoreDisruptions()}}}}};
  return IndexedJob(job, name, job.ps_servers, policy, std::move(container));
}

void CheckTokenOptions(const RenderOptions& o) {
  const int kinds = !o.token.empty() + !o.token_secret.empty() + o.insecure_no_token;
  if (kinds == 0) {
    throw InvalidArgument(fmt::format(
        "no token: every job needs a {} (its rendezvous store is reachable from the whole cluster "
        "network); give a fresh one, reference a Secret with --token-secret NAME, or pass "
        "--insecure-no-token to render without",
        env::kToken.name()));
  }
  if (kinds > 1) {
    throw InvalidArgument("give only one of a token, --token-secret and --insecure-no-token");
  }
  static const std::regex kSecretName{"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"};
  if (!o.token_secret.empty() &&
      (o.token_secret.size() > 253 || !std::regex_match(o.token_secret, kSecretName))) {
    throw InvalidArgument(fmt::format(
        "--token-secret '{}' is not a Secret name (lower-case letters, digits, '-' and '.')",
        o.token_secret));
  }
}

}  // namespace

std::string RandomToken() { return RandomHex(16); }

Json RenderTrainingJob(const Json& doc, const RenderOptions& options) {
  CheckTokenOptions(options);
  const TrainingJob job = ParseTrainingJob(doc);
  Json items = Json::array();
  if (!options.token.empty()) items.push_back(SecretDoc(job, options.token));
  if (job.backend == "mpi") {
    items.push_back(render::MpiJob(job, options));
  } else {
    items.push_back(HeadlessService(job, job.name, "rdzv", render::kRdzvPort));
    if (job.ps_servers > 0) {
      items.push_back(HeadlessService(job, job.name + "-ps", "ps", render::kPsPort));
      items.push_back(PsJob(job, options));
    }
    items.push_back(WorkerJob(job, options));
  }
  return {{"apiVersion", "v1"}, {"kind", "List"}, {"items", std::move(items)}};
}

std::string ListToYamlStream(const Json& list, const std::string& header) {
  std::string out = header;
  bool first = true;
  for (const Json& item : list.at("items")) {
    if (!first) out += "---\n";
    first = false;
    out += JsonToYaml(item);
  }
  return out;
}

}  // namespace cohort::launcher
