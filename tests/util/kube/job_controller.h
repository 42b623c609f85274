// The double's Job controller (batch/v1 Jobs), as the real one behaves for what cohort's
// manifests use: Indexed Jobs (pods <job>-<index>-<random>, hostname <job>-<index>, the
// job-completion-index label and annotation, JOB_COMPLETION_INDEX from it) and NonIndexed ones;
// parallelism and completions; backoffLimit (failed pods counted; one more than the limit fails
// the Job: BackoffLimitExceeded); podFailurePolicy rules onExitCodes (FailJob, Ignore, Count);
// successPolicy (succeededIndexes, succeededCount); suspend (its pods are deleted, condition
// Suspended; unsuspending creates them again); status active, ready, succeeded, failed,
// completedIndexes, startTime, completionTime and the conditions SuccessCriteriaMet, Complete,
// FailureTarget, Failed. A finished Job's remaining pods are deleted. The pods run in the
// double's kubelet (kubelet.h).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/util/kube/object_store.h"

namespace cohort::kube {

class JobController {
 public:
  JobController(ObjectStore& store, ResourceRegistry& registry);
  void Sync();  // one pass over every Job

 private:
  struct Tally {  // terminated pods already counted (status.succeeded/failed only grow)
    std::set<std::string> succeeded, failed, ignored;
    std::set<int> completed;
  };
  ObjectStore& store_;
  ResourceRegistry& registry_;
  std::map<std::string, Tally> tallies_;  // by Job uid

  void Reconcile(const Json& job, const std::vector<Json>& pods);
  // Counts newly terminated pods into tally and collects the active ones; the message of a
  // FailJob rule that matched, else "".
  std::string Count(const Json& job, const std::vector<Json>& pods, Tally& tally,
                    std::vector<Json>& active) const;
  // Creates the pods the Job lacks (indexes not completed nor running, up to parallelism).
  void Scale(const Json& job, const Tally& tally, std::vector<Json>& active);
  void CreatePod(const Json& job, int index);
  void DeletePods(const std::vector<Json>& pods);
  // "" when the failed pod counts, "Ignore", or the FailJob message.
  std::string FailurePolicy(const Json& job, const Json& pod) const;
  void WriteStatus(const Json& job, const Json& status);
};

}  // namespace cohort::kube
