#include "operator/owned_objects.h"

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

void MarkAttempt(Json& pod_template, int attempt) {
  if (attempt == 0) return;
  for (Json& c : pod_template["spec"]["containers"]) {
    SetEnv(c, "COHORT_RESTART", std::to_string(attempt));
    SetEnv(c, "COHORT_RESUME", "latest");
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
      if (kind == "Job") {
        MarkAttempt(item["spec"]["template"], attempt);
      } else {
        for (auto& [role, replica] : item["spec"]["mpiReplicaSpecs"].items())
          MarkAttempt(replica["template"], attempt);
      }
      out.worker = std::move(item);
    } else {
      out.supporting.push_back(std::move(item));
    }
  }
  return out;
}

}  // namespace cohort::k8s
