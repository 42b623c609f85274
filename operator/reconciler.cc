#include "operator/reconciler.h"

#include <fmt/format.h>

#include <map>

#include "common/error.h"
#include "common/log.h"
#include "common/utc_time.h"
#include "launcher/render.h"
#include "operator/job_status.h"
#include "operator/owned_objects.h"

namespace cohort::k8s {
namespace {

std::string PathOf(const Json& object) {
  return ResourcePath(ResourceOf(object), object["metadata"].value("namespace", ""),
                      object["metadata"].value("name", ""));
}

std::string CollectionOf(const Json& object) {
  return ResourcePath(ResourceOf(object), object["metadata"].value("namespace", ""));
}

// Names an object in logs: "Job ns/name".
std::string Named(const Json& object) {
  return fmt::format("{} {}/{}", object.value("kind", ""),
                     object["metadata"].value("namespace", ""),
                     object["metadata"].value("name", ""));
}

[[noreturn]] void Refused(const std::string& what, const ApiResult& r) {
  throw Unavailable(fmt::format("the API server refused to {}: {}", what, r.Message()));
}

}  // namespace

bool Reconciler::Reconcile(const std::string& ns, const std::string& name) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    const Outcome outcome = Pass(ns, name);
    if (outcome != Outcome::kConflict) return outcome == Outcome::kDone;
    COHORT_DEBUG(kOperator, "TrainingJob {}/{}: conflict, reading it again", ns, name);
  }
  return true;  // still contended: the next resync tries again
}

bool Reconciler::OwnerAlive(const Json& object) {
  const Json& ref = object["metadata"]["ownerReferences"][0];
  const ApiResult got = client_.Get(ResourcePath(
      kTrainingJobs, object["metadata"].value("namespace", ""), ref.value("name", "")));
  if (got.status == 404) return false;
  if (!got.ok()) Refused("read the owner of " + Named(object), got);
  return got.body["metadata"].value("uid", "") == ref.value("uid", "") &&
         !got.body["metadata"].contains("deletionTimestamp");
}

bool Reconciler::EnsureExists(const Json& object) {
  const ApiResult got = client_.Get(PathOf(object));
  if (got.ok()) return true;
  if (got.status != 404) Refused("read " + Named(object), got);
  if (!OwnerAlive(object)) return false;
  const ApiResult made = client_.Create(CollectionOf(object), object);
  if (made.ok()) {
    // Never the Secret's content: its data is the job's token.
    COHORT_INFO(kOperator, "created {}", Named(object));
  } else if (made.status != 409) {
    Refused("create " + Named(object), made);
  }
  return true;
}

Json Reconciler::ReadWorker(const Json& desired) {
  const ApiResult got = client_.Get(PathOf(desired));
  if (got.status == 404) return nullptr;
  if (!got.ok()) Refused("read " + Named(desired), got);
  return got.body;
}

std::string Reconciler::Verdict(const Json& worker) {
  const std::string kind = worker.value("kind", "");
  const std::string name = worker["metadata"].value("name", "");
  std::string selector;
  if (kind == "MPIJob") {
    // The mpi-operator's labels on the launcher pod (its Job <name>-launcher runs mpirun): the
    // launcher's exit, not the workers' (sshd, stopped when mpirun ends), judges the attempt.
    selector =
        "training.kubeflow.org/job-name=" + name + ",training.kubeflow.org/job-role=launcher";
  } else if (worker["spec"].contains("selector") &&
             worker["spec"]["selector"].contains("matchLabels")) {
    for (const auto& [k, v] : worker["spec"]["selector"]["matchLabels"].items())
      selector += (selector.empty() ? "" : ",") + k + "=" + v.get<std::string>();
  } else {
    selector = "job-name=" + name;
  }
  const Json pods = ListPods(worker, selector);
  return FailureVerdict(kind == "MPIJob" ? OwnedPods(pods, worker) : pods);
}

Json Reconciler::ListPods(const Json& worker, const std::string& selector) {
  const ApiResult pods =
      client_.List(ResourcePath(kPods, worker["metadata"].value("namespace", "")),
                   "labelSelector=" + http::UriEncode(selector, false));
  if (!pods.ok()) Refused("list the pods of " + Named(worker), pods);
  return pods.body;
}

Json Reconciler::OwnedPods(const Json& pods, const Json& owner) {
  const std::string uid = owner["metadata"].value("uid", "");
  const std::string ns = owner["metadata"].value("namespace", "");
  std::map<std::string, bool> jobs;  // a controlling Job's uid -> whether `owner` controls it
  const auto controls = [&](const Json& ref) {
    if (ref.value("uid", "") == uid) return true;
    if (ref.value("kind", "") != "Job") return false;
    const std::string job = ref.value("name", ""), job_uid = ref.value("uid", "");
    if (jobs.count(job_uid)) return jobs[job_uid];
    const ApiResult got = client_.Get(ResourcePath(kJobs, ns, job));
    if (!got.ok() && got.status != 404) Refused("read Job " + ns + "/" + job, got);
    // The Job of that name may be a later one (same name, new uid): not the pod's.
    bool mine = false;
    if (got.ok() && got.body["metadata"].value("uid", "") == job_uid) {
      for (const Json& r : got.body["metadata"].value("ownerReferences", Json::array()))
        mine = mine || (r.value("controller", false) && r.value("uid", "") == uid);
    }
    return jobs[job_uid] = mine;
  };
  Json kept = {{"items", Json::array()}};
  for (const Json& pod : pods.value("items", Json::array())) {
    for (const Json& ref : pod["metadata"].value("ownerReferences", Json::array())) {
      if (ref.value("controller", false) && controls(ref)) kept["items"].push_back(pod);
    }
  }
  return kept;
}

bool Reconciler::WriteStatus(const Json& training_job, const Json& status) {
  if (training_job.contains("status") && training_job["status"] == status) return true;
  Json update = training_job;
  update["status"] = status;
  const ApiResult r = client_.UpdateStatus(PathOf(training_job), update);
  if (r.status == 409) return false;
  if (!r.ok()) Refused("update the status of " + Named(training_job), r);
  COHORT_INFO(kOperator, "{}: {} ({})", Named(training_job), status.value("phase", ""),
              status["conditions"].back().value("message", ""));
  return true;
}

bool Reconciler::EarlierPodsGone(const Json& desired_worker) {
  const std::string selector =
      (desired_worker.value("kind", "") == "MPIJob" ? "training.kubeflow.org/job-name="
                                                    : "batch.kubernetes.io/job-name=") +
      desired_worker["metadata"].value("name", "");
  const size_t left = ListPods(desired_worker, selector).value("items", Json::array()).size();
  if (left > 0) {
    COHORT_DEBUG(kOperator, "{}: waiting for {} pod(s) of the last attempt to stop",
                 Named(desired_worker), left);
  }
  return left == 0;
}

bool Reconciler::Recreate(const Json& worker_now, const Json& desired) {
  if (!worker_now.is_null()) {
    const ApiResult r = client_.Delete(PathOf(worker_now), "Background");
    if (!r.ok() && r.status != 404) Refused("delete " + Named(worker_now), r);
  }
  if (!OwnerAlive(desired)) return false;
  if (!EarlierPodsGone(desired)) return true;  // a later pass creates it
  const ApiResult made = client_.Create(CollectionOf(desired), desired);
  if (made.ok()) {
    COHORT_INFO(kOperator, "created {} (attempt {})", Named(desired),
                desired["metadata"]["annotations"][kAttemptAnnotation].get<std::string>());
  } else if (made.status != 409) {  // 409: the old one is still going; the next pass creates it
    Refused("create " + Named(desired), made);
  }
  return true;
}

bool Reconciler::Act(const Decision& d, const Json& tj, const Json& worker,
                     const Json& desired_worker) {
  switch (d.action) {
    case Action::kCreate:
      if (!EarlierPodsGone(desired_worker)) return true;  // a later pass creates it
      return EnsureExists(desired_worker);
    case Action::kRecreate:
      return Recreate(worker, DesiredObjects(tj, launcher::RandomToken(), d.restart_count).worker);
    case Action::kSuspend:
    case Action::kResume: {
      // An MPIJob's is spec.runPolicy.suspend: its schema has no spec.suspend, which the API
      // server would prune from the patch, leaving the pods running.
      const bool on = d.action == Action::kSuspend;
      const Json patch = desired_worker.value("kind", "") == "MPIJob"
                             ? Json{{"spec", {{"runPolicy", {{"suspend", on}}}}}}
                             : Json{{"spec", {{"suspend", on}}}};
      const ApiResult r = client_.MergePatch(PathOf(desired_worker), patch);
      if (!r.ok()) Refused("suspend or resume " + Named(desired_worker), r);
      return true;
    }
    case Action::kNone:
      break;
  }
  return true;
}

Reconciler::Outcome Reconciler::Pass(const std::string& ns, const std::string& name) {
  const ApiResult got = client_.Get(ResourcePath(kTrainingJobs, ns, name));
  if (got.status == 404) return Outcome::kFinal;
  if (!got.ok()) Refused(fmt::format("read TrainingJob {}/{}", ns, name), got);
  const Json& tj = got.body;
  if (tj["metadata"].contains("deletionTimestamp")) return Outcome::kFinal;
  const int64_t generation = tj["metadata"].value("generation", int64_t{1});
  const Json status = tj.contains("status") ? tj["status"] : Json();
  if (IsFinal(status, generation)) {
    // Again on every later pass: an operator that died between writing "Failed" and deleting
    // the servers leaves them for the next one (deleting what is gone is a 404).
    if (status.value("phase", "") == "Failed") StopServersOf(tj);
    return Outcome::kFinal;
  }
  const int restarts = status.is_object() ? status.value("restartCount", 0) : 0;
  OwnedObjects desired;
  try {
    desired = DesiredObjects(tj, launcher::RandomToken(), restarts);
  } catch (const InvalidArgument& e) {
    const Json next = NextStatus(status, InvalidSpec(e.what()), generation, UtcNowRfc3339());
    return WriteStatus(tj, next) ? Outcome::kFinal : Outcome::kConflict;
  }
  if (!desired.secret.is_null() && !EnsureExists(desired.secret)) return Outcome::kFinal;
  for (const Json& object : desired.supporting)
    if (!EnsureExists(object)) return Outcome::kFinal;
  const Json worker = ReadWorker(desired.worker);
  const JobObservation seen =
      desired.worker.value("kind", "") == "Job" ? ObserveJob(worker) : ObserveMpiJob(worker);
  const std::string verdict = seen.state == JobState::kFailed ? Verdict(worker) : "";
  const bool suspend = tj["spec"].value("suspend", false);
  const Decision d = Decide(status, seen, tj["spec"].value("maxRestarts", 0), suspend, verdict);
  // The status first: a restart is recorded before it is made, so that an operator that dies
  // in between makes it on its next pass (the Job it finds has the older attempt).
  if (!WriteStatus(tj, NextStatus(status, d, generation, UtcNowRfc3339())))
    return Outcome::kConflict;
  if (!Act(d, tj, worker, desired.worker)) return Outcome::kFinal;  // deleted meanwhile
  if (d.phase == "Failed") StopServers(desired);
  return d.phase == "Succeeded" || d.phase == "Failed" ? Outcome::kFinal : Outcome::kDone;
}

// The parameter servers end by themselves only when the job succeeds (rank 0's launcher tells
// them); after the last failure nothing will use them, and they would hold their pods until
// someone deleted the TrainingJob. So their Job goes, with its pods, as Kubeflow's
// cleanPodPolicy: Running does for a finished job's running pods; the worker Job stays, with
// its pods' logs and termination messages.
void Reconciler::StopServers(const OwnedObjects& desired) {
  for (const Json& object : desired.supporting) {
    if (object.value("kind", "") != "Job") continue;
    const ApiResult r = client_.Delete(PathOf(object), "Background");
    if (r.ok()) {
      COHORT_INFO(kOperator, "{}: the job failed; deleted its parameter servers", Named(object));
    } else if (r.status != 404) {
      Refused("delete " + Named(object), r);
    }
  }
}

void Reconciler::StopServersOf(const Json& tj) {
  OwnedObjects desired;
  try {
    desired = DesiredObjects(tj, launcher::RandomToken(), 0);  // only the objects' names count
  } catch (const InvalidArgument&) {
    return;  // an invalid spec never made any
  }
  StopServers(desired);
}

}  // namespace cohort::k8s
