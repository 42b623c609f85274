// The operator's decisions as pure functions of what the API server shows, so that they are
// unit-tested without a server: what state a Job is in, which failing rank its pods name, what
// to do next for a TrainingJob, and the status to write for it.
#pragma once

#include <string>

#include "operator/kube_client.h"

namespace cohort::k8s {

// The annotation on a worker Job that says which attempt it is (0 first, +1 per restart), so
// that a restarted operator knows whether the Job it finds is current.
inline constexpr const char* kAttemptAnnotation = "cohort.dev/attempt";
// The label on every object the operator creates: the TrainingJob's name.
inline constexpr const char* kOwnerLabel = "cohort.dev/trainingjob";

enum class JobState { kMissing, kDeleting, kPending, kRunning, kSuspended, kSucceeded, kFailed };

struct JobObservation {
  JobState state = JobState::kMissing;
  int attempt = 0;     // kAttemptAnnotation (0 when absent)
  int active = 0;      // pods running
  int pods = 0;        // pods wanted (completions)
  std::string reason;  // of the Failed condition
  std::string message;
};

// A batch/v1 Job (null: none): Complete / SuccessCriteriaMet -> kSucceeded, Failed /
// FailureTarget -> kFailed, Suspended -> kSuspended (or spec.suspend), deletionTimestamp ->
// kDeleting, active pods -> kRunning, else kPending.
JobObservation ObserveJob(const Json& job);

// A kubeflow.org MPIJob: its conditions Succeeded, Failed, Suspended, Running; pods: the
// replicas of spec.mpiReplicaSpecs, active: status.replicaStatuses' active pods.
JobObservation ObserveMpiJob(const Json& mpijob);

// The one-line verdict of a failed Job from its pods (a PodList): the termination message of
// the first failed container by completion index (the launcher writes "rank 2 on node 0 exited
// with code 7" there), else "pod P exited with code N (REASON)", else "".
std::string FailureVerdict(const Json& pods);

enum class Action {
  kNone,      // nothing to change on the cluster
  kCreate,    // create what is missing (current attempt)
  kRecreate,  // delete the worker Job and create attempt restart_count
  kSuspend,   // set the Job's spec.suspend
  kResume,    // clear it
};

struct Decision {
  Action action = Action::kNone;
  std::string phase;  // Created, Running, Restarting, Suspended, Succeeded, Failed
  std::string reason;
  std::string message;
  int restart_count = 0;
};

// What to do for a TrainingJob whose status is `status` (maybe null), whose spec asks for
// max_restarts (< 0: 0) and suspend, given its worker Job and, when that failed, the verdict.
Decision Decide(const Json& status, const JobObservation& job, int max_restarts, bool suspend,
                const std::string& verdict);

// Whether the status is final: Succeeded, or Failed for a reason other than an invalid spec
// that has changed since (a fixed spec is tried again).
bool IsFinal(const Json& status, int64_t generation);

// The status to write: phase, the decision's condition True (Created stays True once the
// objects exist; Running, Restarting, Suspended, Succeeded and Failed are True only while they
// are the phase), restartCount, observedGeneration. lastTransitionTime changes only with a
// condition's status; a decision that only waits (PodsPending, JobDeleting) leaves the reason and
// message of a condition already True. `now`: RFC 3339.
Json NextStatus(const Json& old_status, const Decision& decision, int64_t generation,
                const std::string& now);

// The status of a spec that cannot be rendered: Failed, reason Invalid, with the message.
Decision InvalidSpec(const std::string& message);

}  // namespace cohort::k8s
