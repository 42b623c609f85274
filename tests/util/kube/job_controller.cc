#include "tests/util/kube/job_controller.h"

#include <algorithm>

#include "common/utc_time.h"
#include "tests/util/kube/api_error.h"
#include "tests/util/kube/object_rules.h"

namespace cohort::kube {
namespace {

bool HasCondition(const Json& job, const std::string& type) {
  for (const auto& c : job.value("status", Json::object()).value("conditions", Json::array())) {
    if (c.value("type", "") == type && c.value("status", "") == "True") return true;
  }
  return false;
}

// Sets condition `type` in status (keeping lastTransitionTime when its status is unchanged).
void SetCondition(Json& status, const std::string& type, bool value, const std::string& reason,
                  const std::string& message) {
  Json& conditions = status["conditions"];
  if (!conditions.is_array()) conditions = Json::array();
  const std::string now = UtcNowRfc3339(), s = value ? "True" : "False";
  for (auto& c : conditions) {
    if (c.value("type", "") != type) continue;
    if (c.value("status", "") != s) c["lastTransitionTime"] = now;
    c["status"] = s;
    c["reason"] = reason;
    c["message"] = message;
    return;
  }
  conditions.push_back({{"type", type},
                        {"status", s},
                        {"reason", reason},
                        {"message", message},
                        {"lastProbeTime", now},
                        {"lastTransitionTime", now}});
}

int Index(const Json& pod) {
  const Json ann = pod["metadata"].value("annotations", Json::object());
  const std::string v = ann.value("batch.kubernetes.io/job-completion-index", "");
  return v.empty() ? -1 : std::stoi(v);
}

// "0-2,5" as Kubernetes writes completedIndexes.
std::string Ranges(const std::set<int>& indexes) {
  std::string out;
  for (auto it = indexes.begin(); it != indexes.end();) {
    int first = *it, last = *it;
    while (++it != indexes.end() && *it == last + 1) last = *it;
    out += (out.empty() ? "" : ",") + std::to_string(first) +
           (last > first ? "-" + std::to_string(last) : "");
  }
  return out;
}

// The indexes of "0-2,5".
std::set<int> ParseRanges(const std::string& ranges) {
  std::set<int> out;
  for (size_t at = 0; at < ranges.size();) {
    size_t end = ranges.find(',', at);
    if (end == std::string::npos) end = ranges.size();
    const std::string part = ranges.substr(at, end - at);
    const size_t dash = part.find('-');
    const int lo = std::stoi(part.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
    for (int i = lo; i <= hi; ++i) out.insert(i);
    at = end + 1;
  }
  return out;
}

bool Active(const Json& pod) {
  const std::string phase = pod["status"].value("phase", "");
  return (phase == "Pending" || phase == "Running") &&
         !pod["metadata"].contains("deletionTimestamp");
}

// A successPolicy rule holds when the indexes it names all succeeded (or, with succeededCount,
// at least that many of them, or of all indexes when it names none).
bool SuccessPolicyMet(const Json& spec, const std::set<int>& completed) {
  const Json policy = spec.value("successPolicy", Json::object());
  for (const auto& rule : policy.value("rules", Json::array())) {
    const bool named = rule.contains("succeededIndexes");
    const std::set<int> indexes = ParseRanges(rule.value("succeededIndexes", ""));
    int count = 0;
    for (int i : completed) count += !named || indexes.count(i);
    if (rule.contains("succeededCount")) {
      if (count >= rule["succeededCount"].get<int>()) return true;
    } else if (named && count == static_cast<int>(indexes.size())) {
      return true;
    }
  }
  return false;
}

}  // namespace

JobController::JobController(ObjectStore& store, ResourceRegistry& registry)
    : store_(store), registry_(registry) {}

void JobController::Sync() {
  const Json jobs =
      store_.List(*registry_.Find("batch", "v1", "jobs"), "", LabelSelector(), std::nullopt);
  const Json pods =
      store_.List(*registry_.Find("", "v1", "pods"), "", LabelSelector(), std::nullopt);
  std::set<std::string> live;
  for (const auto& job : jobs["items"]) {
    const std::string uid = job["metadata"]["uid"];
    live.insert(uid);
    std::vector<Json> owned;
    for (const auto& pod : pods["items"]) {
      for (const auto& ref : pod["metadata"].value("ownerReferences", Json::array())) {
        if (ref.value("uid", "") == uid && ref.value("controller", false)) owned.push_back(pod);
      }
    }
    try {
      Reconcile(job, owned);
    } catch (const ApiError& e) {
      if (e.code() != 409 && e.code() != 404) throw;  // changed under us: next pass
    }
  }
  for (auto it = tallies_.begin(); it != tallies_.end();) {
    it = live.count(it->first) ? std::next(it) : tallies_.erase(it);
  }
}

std::string JobController::FailurePolicy(const Json& job, const Json& pod) const {
  const Json policy = job["spec"].value("podFailurePolicy", Json::object());
  const Json statuses = pod["status"].value("containerStatuses", Json::array());
  const Json rules = policy.value("rules", Json::array());
  for (size_t r = 0; r < rules.size(); ++r) {
    const Json& rule = rules[r];
    if (!rule.contains("onExitCodes")) continue;  // onPodConditions: no disruptions here
    const Json& on = rule["onExitCodes"];
    for (const auto& cs : statuses) {
      if (on.contains("containerName") && on["containerName"] != cs.value("name", "")) continue;
      const Json term = cs.value("state", Json::object()).value("terminated", Json::object());
      if (!term.contains("exitCode")) continue;
      const int code = term["exitCode"];
      const Json values = on.value("values", Json::array());
      const bool listed = std::find(values.begin(), values.end(), code) != values.end();
      if ((on.value("operator", "In") == "In") != listed || code == 0) continue;
      const std::string action = rule.value("action", "");
      if (action == "Ignore") return "Ignore";
      if (action == "Count") return "";
      if (action == "FailJob") {
        return "Container " + cs.value("name", "") + " for pod " +
               pod["metadata"].value("namespace", "") + "/" + pod["metadata"].value("name", "") +
               " failed with exit code " + std::to_string(code) +
               " matching FailJob rule at index " + std::to_string(r);
      }
    }
  }
  return "";
}

void JobController::Reconcile(const Json& job, const std::vector<Json>& pods) {
  const Json& spec = job["spec"];
  Tally& tally = tallies_[job["metadata"]["uid"]];
  Json status = job.value("status", Json::object());
  const bool indexed = spec.value("completionMode", "NonIndexed") == "Indexed";
  std::string fail_reason, fail_message;
  std::vector<Json> active;
  fail_message = Count(job, pods, tally, active);
  if (!fail_message.empty()) fail_reason = "PodFailurePolicy";
  const int completions = spec.value("completions", 1);
  const int succeeded =
      indexed ? static_cast<int>(tally.completed.size()) : static_cast<int>(tally.succeeded.size());
  const int failed = static_cast<int>(tally.failed.size());
  status["succeeded"] = succeeded;
  status["failed"] = failed;
  if (indexed) status["completedIndexes"] = Ranges(tally.completed);
  const bool finished = HasCondition(job, "Complete") || HasCondition(job, "Failed");
  if (!finished && fail_reason.empty() && failed > spec.value("backoffLimit", 6)) {
    fail_reason = "BackoffLimitExceeded";
    fail_message = "Job has reached the specified backoff limit";
  }
  const bool success = succeeded >= completions || SuccessPolicyMet(spec, tally.completed);
  if (!finished && !fail_reason.empty()) {
    SetCondition(status, "FailureTarget", true, fail_reason, fail_message);
    SetCondition(status, "Failed", true, fail_reason, fail_message);
  } else if (!finished && success) {
    const std::string reason = succeeded >= completions ? "CompletionsReached" : "SuccessPolicy";
    SetCondition(status, "SuccessCriteriaMet", true, reason,
                 "Reached expected number of succeeded pods");
    SetCondition(status, "Complete", true, reason, "Reached expected number of succeeded pods");
    status["completionTime"] = UtcNowRfc3339();
  }
  const bool done = HasCondition({{"status", status}}, "Complete") ||
                    HasCondition({{"status", status}}, "Failed");
  const bool suspend = spec.value("suspend", false);
  if (done || suspend) {
    DeletePods(active);
    active.clear();
    if (suspend && !done) {
      SetCondition(status, "Suspended", true, "JobSuspended", "Job suspended");
      status.erase("startTime");
    }
  } else {
    if (HasCondition(job, "Suspended"))
      SetCondition(status, "Suspended", false, "JobResumed", "Job resumed");
    if (!status.contains("startTime")) status["startTime"] = UtcNowRfc3339();
    Scale(job, tally, active);
  }
  int ready = 0;
  for (const auto& p : active) ready += !p.is_null() && p["status"].value("phase", "") == "Running";
  status["active"] = static_cast<int>(active.size());
  status["ready"] = ready;
  status["terminating"] = 0;
  status["uncountedTerminatedPods"] = Json::object();
  if (status != job.value("status", Json::object())) WriteStatus(job, status);
}

std::string JobController::Count(const Json& job, const std::vector<Json>& pods, Tally& tally,
                                 std::vector<Json>& active) const {
  std::string fail_job;
  for (const auto& pod : pods) {
    const std::string uid = pod["metadata"]["uid"], phase = pod["status"].value("phase", "");
    if (Active(pod)) active.push_back(pod);
    if (phase == "Succeeded" && tally.succeeded.insert(uid).second && Index(pod) >= 0) {
      tally.completed.insert(Index(pod));
    }
    if (phase == "Failed" && !tally.failed.count(uid) && !tally.ignored.count(uid)) {
      const std::string verdict = FailurePolicy(job, pod);
      if (verdict == "Ignore") {
        tally.ignored.insert(uid);
      } else {
        tally.failed.insert(uid);
        if (!verdict.empty()) fail_job = verdict;
      }
    }
  }
  return fail_job;
}

void JobController::Scale(const Json& job, const Tally& tally, std::vector<Json>& active) {
  const Json& spec = job["spec"];
  const int completions = spec.value("completions", 1), parallelism = spec.value("parallelism", 1);
  if (spec.value("completionMode", "NonIndexed") == "Indexed") {
    std::set<int> running;
    for (const auto& p : active) running.insert(Index(p));
    for (int i = 0; i < completions && static_cast<int>(active.size()) < parallelism; ++i) {
      if (tally.completed.count(i) || running.count(i)) continue;
      CreatePod(job, i);
      active.push_back(Json());  // counts as active from now on
    }
    return;
  }
  const int want = std::min(parallelism, completions - static_cast<int>(tally.succeeded.size()));
  for (int n = static_cast<int>(active.size()); n < want; ++n) {
    CreatePod(job, -1);
    active.push_back(Json());
  }
}

void JobController::CreatePod(const Json& job, int index) {
  const Json& meta = job["metadata"];
  const std::string name = meta["name"];
  Json pod = {{"apiVersion", "v1"}, {"kind", "Pod"}};
  Json tmpl = job["spec"].value("template", Json::object());
  Json pmeta = tmpl.value("metadata", Json::object());
  Json pspec = tmpl.value("spec", Json::object());
  pmeta["generateName"] = index >= 0 ? name + "-" + std::to_string(index) + "-" : name + "-";
  pmeta["ownerReferences"] = {{{"apiVersion", "batch/v1"},
                               {"kind", "Job"},
                               {"name", name},
                               {"uid", meta["uid"]},
                               {"controller", true},
                               {"blockOwnerDeletion", true}}};
  if (index >= 0) {
    const std::string i = std::to_string(index);
    pmeta["labels"]["batch.kubernetes.io/job-completion-index"] = i;
    pmeta["annotations"]["batch.kubernetes.io/job-completion-index"] = i;
    pspec["hostname"] = name + "-" + i;
    for (auto& c : pspec["containers"]) {
      c["env"].push_back(
          {{"name", "JOB_COMPLETION_INDEX"},
           {"valueFrom",
            {{"fieldRef",
              {{"apiVersion", "v1"},
               {"fieldPath",
                "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}}}});
    }
  }
  pspec["nodeName"] = "kube-double-node";
  pod["metadata"] = pmeta;
  pod["spec"] = pspec;
  store_.Create(*registry_.Find("", "v1", "pods"), meta["namespace"], pod);
}

void JobController::DeletePods(const std::vector<Json>& pods) {
  for (const auto& pod : pods) {
    try {
      store_.Delete(*registry_.Find("", "v1", "pods"), pod["metadata"]["namespace"],
                    pod["metadata"]["name"], {"Background", "", ""});
    } catch (const ApiError& e) {
      if (e.code() != 404) throw;
    }
  }
}

void JobController::WriteStatus(const Json& job, const Json& status) {
  Json updated = job;
  updated["status"] = status;
  store_.Update(*registry_.Find("batch", "v1", "jobs"), job["metadata"]["namespace"],
                job["metadata"]["name"], updated, true);
}

}  // namespace cohort::kube
