#include "operator/owned_objects.h"

#include "common/env.h"
#include "launcher/render.h"
#include "operator/job_status.h"

namespace cohort::k8s {
namespace {

// Sets name=value in a container's env, replacing an entry of that name.
void SetEnv(Json& container, const std::string& name, const std::string& value) {
  Json& env = container["env"];
  if (!env.is_array()) env = Json::array();
  for (auto it = env.begin(); it != env.end();) {
    it = it->value("name", "") == name ? env.erase(it) : it + 1;
  }
  env.push_back({{"name", name}, {"value", value}});
}

bool HasEnv(const Json& container, const std::string& name) {
  if (!container.contains("env")) return false;
  for (const Json& e : container["env"])
    if (e.value("name", "") == name) return true;
  return false;
}

// An MPIJob's launcher runs `mpirun ... -x NAME ... cohort launch`: the ranks, started over
// SSH, see only the variables forwarded with -x, so every one set here is forwarded too.
void ForwardThroughMpirun(Json& container) {
  Json& command = container["command"];
  if (!command.is_array() || command.empty() || command[0] != "mpirun") return;
  for (const char* name : {env::kMaxRestarts.name(), env::kRestart.name(), env::kResume.name()}) {
    if (!HasEnv(container, name)) continue;
    bool forwarded = false;
    for (size_t i = 0; i + 1 < command.size(); ++i)
      forwarded = forwarded || (command[i] == "-x" && command[i + 1] == name);
    if (forwarded) continue;
    command.insert(command.begin() + 1, name);
    command.insert(command.begin() + 1, "-x");
  }
}

// The operator is the one place a TrainingJob restarts, so that spec.maxRestarts counts every
// restart once and status.restartCount counts them all: the launchers in its pods restart
// nothing themselves (COHORT_MAX_RESTARTS=0; a launcher that gave up fails its pod, the Job
// fails, and the operator recreates it). Attempt N's workers see COHORT_RESTART=N (the
// launcher starts counting from it) and resume from the newest snapshot. With snapshots
// (spec.checkpointURI) attempt 0 resumes from the newest one too, unless spec.env says
// otherwise: its pods come back after a suspension (the Job's template cannot change then) and
// must go on from the snapshot their SIGTERM saved; with none yet they start afresh.
void MarkAttempt(Json& pod_template, int attempt, bool snapshots) {
  for (Json& c : pod_template["spec"]["containers"]) {
    SetEnv(c, env::kMaxRestarts.name(), "0");
    if (attempt > 0) {
      SetEnv(c, env::kRestart.name(), std::to_string(attempt));
      SetEnv(c, env::kResume.name(), "latest");
    } else if (snapshots && !HasEnv(c, env::kResume.name())) {
      SetEnv(c, env::kResume.name(), "latest");
    }
    ForwardThroughMpirun(c);
  }
}

void Own(Json& object, const Json& training_job) {
  Json& meta = object["metadata"];
  meta["namespace"] = training_job["metadata"].value("namespace", "default");
  meta["labels"][kOwnerLabel] = training_job["metadata"]["name"];
  meta["ownerReferences"] = Json::array({OwnerReference(training_job)});
}

}  // namespace

Json SpecDocument(const Json& training_job) {
  const Json& meta = training_job["metadata"];
  Json m = {{"name", meta.value("name", "")}};
  if (meta.contains("namespace")) m["namespace"] = meta["namespace"];
  if (meta.contains("labels")) m["labels"] = meta["labels"];
  return {{"apiVersion", training_job.value("apiVersion", "")},
          {"kind", training_job.value("kind", "")},
          {"metadata", std::move(m)},
          {"spec", training_job.contains("spec") ? training_job["spec"] : Json::object()}};
}

Json OwnerReference(const Json& training_job) {
  return {{"apiVersion", training_job.value("apiVersion", "cohort.dev/v1alpha1")},
          {"kind", "TrainingJob"},
          {"name", training_job["metadata"].value("name", "")},
          {"uid", training_job["metadata"].value("uid", "")},
          {"controller", true},
          {"blockOwnerDeletion", true}};
}

OwnedObjects DesiredObjects(const Json& training_job, const std::string& fresh_token, int attempt) {
  launcher::RenderOptions options;
  options.token = fresh_token;
  const Json list = launcher::RenderTrainingJob(SpecDocument(training_job), options);
  const std::string name = training_job["metadata"].value("name", "");
  OwnedObjects out;
  for (Json item : list["items"]) {
    Own(item, training_job);
    const std::string kind = item.value("kind", "");
    const bool worker = (kind == "Job" || kind == "MPIJob") && item["metadata"]["name"] == name;
    if (kind == "Secret") {
      out.secret = std::move(item);
    } else if (worker) {
      item["metadata"]["annotations"][kAttemptAnnotation] = std::to_string(attempt);
      const bool snapshots = !training_job["spec"].value("checkpointURI", "").empty();
      if (kind == "Job") {
        MarkAttempt(item["spec"]["template"], attempt, snapshots);
      } else {
        // mpirun cannot restart in place; the mpi-operator's own retries would count twice.
        item["spec"]["runPolicy"]["backoffLimit"] = 0;
        for (auto& [role, replica] : item["spec"]["mpiReplicaSpecs"].items())
          MarkAttempt(replica["template"], attempt, snapshots);
      }
      out.worker = std::move(item);
    } else {
      out.supporting.push_back(std::move(item));
    }
  }
  return out;
}

}  // namespace cohort::k8s
