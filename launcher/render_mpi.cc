// The MPIJob for backend mpi. The launcher pod runs mpirun, which reaches the worker pods over
// SSH (keys and hostfile mounted by the MPI operator) and starts nnodes x nprocPerNode
// processes, each one `cohort launch` with one worker that inherits the Open MPI environment.
// Processes started through sshd do not see the worker pods' env, so everything they need is
// set on the launcher and forwarded with mpirun -x.
#include <fmt/format.h>

#include "common/env.h"
#include "launcher/render_parts.h"

namespace cohort::launcher::render {
namespace {

Json LauncherEnv(const TrainingJob& job, const RenderOptions& o) {
  Json env = Json::array();
  // The image runs as root; these are for mpirun itself and are not forwarded.
  env.push_back(EnvValue("OMPI_ALLOW_RUN_AS_ROOT", "1"));
  env.push_back(EnvValue("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"));
  if (Json token = TokenEnv(job, o); !token.is_null()) env.push_back(token);
  env.push_back(EnvField(env::kRunId.name(), "metadata.labels['training.kubeflow.org/job-name']"));
  env.push_back(EnvValue(env::kBackend.name(), "mpi"));
  // The ranks span the worker pods: every launcher must reach rank 0's (the hostfile's order
  // puts ranks 0..slots-1 on worker 0) through the operator's headless Service <job>-worker.
  env.push_back(EnvValue(env::kRdzvEndpoint.name(),
                         fmt::format("{}-worker-0.{}-worker:{}", job.name, job.name, kRdzvPort)));
  if (!job.checkpoint_uri.empty())
    env.push_back(EnvValue(env::kCheckpointUri.name(), job.checkpoint_uri));
  if (!job.register_name.empty()) env.push_back(EnvValue(env::kRegister.name(), job.register_name));
  for (const Json& e : job.env) env.push_back(e);
  return env;
}

Json LauncherCommand(const TrainingJob& job, const RenderOptions& o, const Json& env) {
  const int slots = std::stoi(job.nproc_per_node);
  Json command = {"mpirun", "-np", std::to_string(job.max_nodes * slots), "--bind-to", "none"};
  for (const Json& e : env) {
    const std::string name = e["name"].get<std::string>();
    if (name.rfind("OMPI_", 0) == 0) continue;
    command.push_back("-x");
    command.push_back(name);
  }
  command.push_back("cohort");
  command.push_back("launch");
  if (o.insecure_no_token) command.push_back("--insecure-store");  // else refused without a token
  command.push_back("--");
  for (const std::string& a : job.program) command.push_back(a);
  return command;
}

Json Launcher(const TrainingJob& job, const RenderOptions& o) {
  const Json env = LauncherEnv(job, o);
  Json container = {{"name", "mpi-launcher"},
                    {"image", job.image},
                    {"command", LauncherCommand(job, o, env)},
                    {"env", env},
                    // mpirun only; the workers run on the Worker pods.
                    {"resources",
                     {{"requests", {{"cpu", "500m"}, {"memory", "512Mi"}}},
                      {"limits", {{"cpu", "1"}, {"memory", "512Mi"}}}}}};
  Json pod = {{"metadata", {{"labels", Labels(job)}}},
              {"spec",
               {{"terminationGracePeriodSeconds", kTerminationGraceSeconds},
                {"containers", Json::array({std::move(container)})}}}};
  MergePodTemplate(job, pod);
  // Never: each retry (runPolicy.backoffLimit) is a new pod, so each attempt keeps its logs.
  return {{"replicas", 1}, {"restartPolicy", "Never"}, {"template", std::move(pod)}};
}

Json Workers(const TrainingJob& job) {
  Json container = {{"name", "mpi-worker"},
                    {"image", job.image},
                    // What the operator runs when no command is given, written out.
                    {"command", {"/usr/sbin/sshd", "-De"}}};
  if (!job.resources.empty()) container["resources"] = job.resources;
  Json pod = {{"metadata", {{"labels", Labels(job)}}},
              {"spec",
               {{"terminationGracePeriodSeconds", kTerminationGraceSeconds},
                {"containers", Json::array({std::move(container)})}}}};
  MergePodTemplate(job, pod);
  return {{"replicas", job.max_nodes}, {"template", std::move(pod)}};
}

}  // namespace

Json MpiJob(const TrainingJob& job, const RenderOptions& options) {
  // Open MPI aborts every rank when one fails, so cohort cannot restart a group in place under
  // mpirun: maxRestarts becomes the operator's retries of the launcher (a new mpirun each).
  Json run_policy = {{"cleanPodPolicy", "Running"}};
  if (job.max_restarts >= 0) run_policy["backoffLimit"] = job.max_restarts;
  if (job.suspend) run_policy["suspend"] = true;
  Json spec = {
      {"slotsPerWorker", std::stoi(job.nproc_per_node)},
      {"mpiImplementation", "OpenMPI"},
      // The default, written out: the image runs as root.
      {"sshAuthMountPath", "/root/.ssh"},
      {"runPolicy", run_policy},
      {"mpiReplicaSpecs", {{"Launcher", Launcher(job, options)}, {"Worker", Workers(job)}}}};
  return {{"apiVersion", "kubeflow.org/v2beta1"},
          {"kind", "MPIJob"},
          {"metadata", Metadata(job, job.name)},
          {"spec", std::move(spec)}};
}

}  // namespace cohort::launcher::render
