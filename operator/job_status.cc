#include "operator/job_status.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <vector>

namespace cohort::k8s {
namespace {

// The condition of `type` with status "True", or nullptr.
const Json* TrueCondition(const Json& object, const std::string& type) {
  const Json* conditions = nullptr;
  if (object.contains("status") && object["status"].contains("conditions"))
    conditions = &object["status"]["conditions"];
  if (conditions == nullptr || !conditions->is_array()) return nullptr;
  for (const Json& c : *conditions) {
    if (c.value("type", "") == type && c.value("status", "") == "True") return &c;
  }
  return nullptr;
}

int IntAt(const Json& o, const char* a, const char* b) {
  if (!o.contains(a) || !o[a].is_object() || !o[a].contains(b)) return 0;
  return o[a][b].is_number_integer() ? o[a][b].get<int>() : 0;
}

void Fill(JobObservation* out, JobState state, const Json* condition) {
  out->state = state;
  if (condition != nullptr) {
    out->reason = condition->value("reason", "");
    out->message = condition->value("message", "");
  }
}

int CompletionIndex(const Json& pod) {
  const Json& meta = pod["metadata"];
  for (const char* where : {"annotations", "labels"}) {
    if (meta.contains(where) && meta[where].contains("batch.kubernetes.io/job-completion-index"))
      return std::atoi(
          meta[where]["batch.kubernetes.io/job-completion-index"].get<std::string>().c_str());
  }
  return 1 << 30;
}

const Json* Condition(const Json& status, const std::string& type) {
  if (!status.is_object() || !status.contains("conditions")) return nullptr;
  for (const Json& c : status["conditions"]) {
    if (c.value("type", "") == type) return &c;
  }
  return nullptr;
}

}  // namespace

JobObservation ObserveJob(const Json& job) {
  JobObservation out;
  if (job.is_null()) return out;
  const Json& meta = job["metadata"];
  if (meta.contains("annotations") && meta["annotations"].contains(kAttemptAnnotation))
    out.attempt = std::atoi(meta["annotations"][kAttemptAnnotation].get<std::string>().c_str());
  out.active = IntAt(job, "status", "active");
  out.pods = IntAt(job, "spec", "completions");
  if (meta.contains("deletionTimestamp")) {
    out.state = JobState::kDeleting;
  } else if (const Json* c = TrueCondition(job, "Failed")) {
    Fill(&out, JobState::kFailed, c);
  } else if (const Json* c = TrueCondition(job, "FailureTarget")) {
    Fill(&out, JobState::kFailed, c);
  } else if (const Json* c = TrueCondition(job, "Complete")) {
    Fill(&out, JobState::kSucceeded, c);
  } else if (const Json* c = TrueCondition(job, "SuccessCriteriaMet")) {
    Fill(&out, JobState::kSucceeded, c);
  } else if (TrueCondition(job, "Suspended") != nullptr || job["spec"].value("suspend", false)) {
    out.state = JobState::kSuspended;
  } else {
    out.state = out.active > 0 ? JobState::kRunning : JobState::kPending;
  }
  return out;
}

JobObservation ObserveMpiJob(const Json& mpijob) {
  JobObservation out;
  if (mpijob.is_null()) return out;
  const Json& meta = mpijob["metadata"];
  if (meta.contains("annotations") && meta["annotations"].contains(kAttemptAnnotation))
    out.attempt = std::atoi(meta["annotations"][kAttemptAnnotation].get<std::string>().c_str());
  // Pods: every replica (launcher and workers); active: what the mpi-operator counts running.
  if (mpijob.contains("spec") && mpijob["spec"].contains("mpiReplicaSpecs")) {
    for (const auto& [role, replica] : mpijob["spec"]["mpiReplicaSpecs"].items())
      out.pods += replica.value("replicas", 1);
  }
  if (mpijob.contains("status") && mpijob["status"].contains("replicaStatuses")) {
    for (const auto& [role, replica] : mpijob["status"]["replicaStatuses"].items())
      out.active += replica.value("active", 0);
  }
  if (meta.contains("deletionTimestamp")) {
    out.state = JobState::kDeleting;
  } else if (const Json* c = TrueCondition(mpijob, "Failed")) {
    Fill(&out, JobState::kFailed, c);
  } else if (const Json* c = TrueCondition(mpijob, "Succeeded")) {
    Fill(&out, JobState::kSucceeded, c);
  } else if (TrueCondition(mpijob, "Suspended") != nullptr) {
    out.state = JobState::kSuspended;
  } else {
    out.state = TrueCondition(mpijob, "Running") ? JobState::kRunning : JobState::kPending;
  }
  return out;
}

std::string FailureVerdict(const Json& pods) {
  if (!pods.contains("items")) return "";
  std::vector<const Json*> items;
  for (const Json& p : pods["items"]) items.push_back(&p);
  std::stable_sort(items.begin(), items.end(), [](const Json* a, const Json* b) {
    return CompletionIndex(*a) < CompletionIndex(*b);
  });
  std::string fallback;
  for (const Json* pod : items) {
    const Json& status = (*pod)["status"];
    if (!status.contains("containerStatuses")) continue;
    for (const Json& cs : status["containerStatuses"]) {
      if (!cs.contains("state") || !cs["state"].contains("terminated")) continue;
      const Json& t = cs["state"]["terminated"];
      const int code = t.value("exitCode", 0);
      if (code == 0) continue;
      std::string message = t.value("message", "");
      while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
        message.pop_back();
      if (!message.empty()) return http::OneLine(message);
      if (fallback.empty()) {
        fallback =
            fmt::format("pod {} exited with code {} ({})", (*pod)["metadata"].value("name", "?"),
                        code, t.value("reason", "Error"));
      }
    }
  }
  return fallback;
}

bool IsFinal(const Json& status, int64_t generation) {
  if (!status.is_object()) return false;
  const std::string phase = status.value("phase", "");
  if (phase == "Succeeded") return true;
  if (phase != "Failed") return false;
  const Json* failed = Condition(status, "Failed");
  const bool invalid = failed != nullptr && failed->value("reason", "") == "Invalid";
  return !invalid || status.value("observedGeneration", int64_t{0}) == generation;
}

Decision InvalidSpec(const std::string& message) {
  return {Action::kNone, "Failed", "Invalid", http::OneLine(message), 0};
}

Decision Decide(const Json& status, const JobObservation& job, int max_restarts, bool suspend,
                const std::string& verdict) {
  Decision d;
  d.restart_count = status.is_object() ? status.value("restartCount", 0) : 0;
  const std::string phase = status.is_object() ? status.value("phase", "") : "";
  const int limit = std::max(0, max_restarts);
  auto set = [&d](Action a, const char* p, const char* reason, std::string message) {
    d.action = a;
    d.phase = p;
    d.reason = reason;
    d.message = std::move(message);
    return d;
  };
  const char* waiting = d.restart_count > 0 ? "Restarting" : "Created";
  switch (job.state) {
    case JobState::kMissing:
      return set(Action::kCreate, waiting, "JobCreated",
                 fmt::format("created attempt {}", d.restart_count));
    case JobState::kDeleting:
      return set(Action::kNone, phase.empty() ? waiting : phase.c_str(), "JobDeleting",
                 "waiting for the previous attempt's Job to go");
    default:
      break;
  }
  if (job.attempt < d.restart_count) {  // left over from before a restart was recorded
    return set(Action::kRecreate, "Restarting", "Restarting",
               fmt::format("replacing attempt {} with attempt {}", job.attempt, d.restart_count));
  }
  if (job.state == JobState::kSucceeded) {
    return set(Action::kNone, "Succeeded", "JobComplete",
               fmt::format("finished after {} restart(s)", d.restart_count));
  }
  if (job.state == JobState::kFailed) {
    const std::string why = !verdict.empty()       ? verdict
                            : !job.message.empty() ? job.message
                                                   : "the Job failed (" + job.reason + ")";
    if (d.restart_count < limit) {
      d.restart_count += 1;
      return set(Action::kRecreate, "Restarting", "RankFailed",
                 fmt::format("{}; restart {} of {} from the latest snapshot", why, d.restart_count,
                             limit));
    }
    return set(Action::kNone, "Failed", limit > 0 ? "RestartsExhausted" : "RankFailed",
               limit > 0 ? fmt::format("{} (after {} restart(s))", why, d.restart_count) : why);
  }
  if (suspend) {
    return set(job.state == JobState::kSuspended ? Action::kNone : Action::kSuspend, "Suspended",
               "Suspended", "spec.suspend is true: the pods checkpoint and stop");
  }
  if (job.state == JobState::kSuspended) {
    return set(Action::kResume, "Running", "Resumed", "resumed from the latest snapshot");
  }
  if (job.state == JobState::kRunning) {
    return set(Action::kNone, "Running", "PodsRunning",
               fmt::format("{} of {} pod(s) running", job.active, job.pods));
  }
  return set(Action::kNone, waiting, "PodsPending", "waiting for the pods to start");
}

Json NextStatus(const Json& old_status, const Decision& d, int64_t generation,
                const std::string& now) {
  Json status = old_status.is_object() ? old_status : Json::object();
  Json conditions = Json::array();
  const bool created = d.reason != "Invalid";
  // A decision that only waits keeps the reason and message of the condition that is already
  // True: a Restarting condition goes on naming the failure that caused it while the next
  // attempt's pods start (an MPIJob's until the mpi-operator says Running).
  const bool waits = d.reason == "PodsPending" || d.reason == "JobDeleting";
  for (const char* type :
       {"Created", "Running", "Restarting", "Suspended", "Succeeded", "Failed"}) {
    const Json* old = Condition(old_status, type);
    const bool is_phase = d.phase == type;
    const bool on = is_phase || (std::string(type) == "Created" && created);
    if (old == nullptr && !on) continue;
    Json c = old != nullptr ? *old : Json{{"type", type}};
    const std::string value = on ? "True" : "False";
    const bool kept = waits && c.value("status", "") == "True";
    if (c.value("status", "") != value) c["lastTransitionTime"] = now;
    c["status"] = value;
    if ((is_phase && !kept) || old == nullptr) {
      c["reason"] = d.reason;
      c["message"] = d.message;
    }
    conditions.push_back(std::move(c));
  }
  status["phase"] = d.phase;
  status["conditions"] = std::move(conditions);
  status["restartCount"] = d.restart_count;
  status["observedGeneration"] = generation;
  return status;
}

}  // namespace cohort::k8s
