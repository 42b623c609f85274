// One TrainingJob's reconciliation: read it, create what is missing (the token Secret, the
// render output), read its worker Job and the pods' termination messages, decide
// (job_status.h), act (create, delete and recreate for a restart, suspend, resume) and write the
// status. Idempotent: every object is looked up by name before it is created, and a worker Job
// carries its attempt, so a restarted operator continues where the last one stopped.
#pragma once

#include <string>

#include "operator/kube_client.h"

namespace cohort::k8s {

class Reconciler {
 public:
  explicit Reconciler(KubeClient& client) : client_(client) {}

  // Returns false when the TrainingJob is gone or final (nothing more to watch for it). Retries
  // itself from a fresh read when a write meets a 409 Conflict. Throws Unavailable when the API
  // server cannot be reached.
  bool Reconcile(const std::string& ns, const std::string& name);

 private:
  enum class Outcome { kDone, kFinal, kConflict };
  Outcome Pass(const std::string& ns, const std::string& name);
  // Creates `object` unless an object of its name exists; 409 AlreadyExists counts as there.
  void EnsureExists(const Json& object);
  // The worker object (null when absent), and the failure verdict of its pods when it failed.
  Json ReadWorker(const Json& desired);
  std::string Verdict(const Json& job);
  // PUT /status with the TrainingJob's resourceVersion; false on 409.
  bool WriteStatus(const Json& training_job, const Json& status);
  void Recreate(const Json& worker_now, const Json& desired);

  KubeClient& client_;
};

}  // namespace cohort::k8s
