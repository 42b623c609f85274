// One TrainingJob's reconciliation: read it, create what is missing (the token Secret, the
// render output), read its worker Job and the pods' termination messages, decide
// (job_status.h), act (create, delete and recreate for a restart, suspend, resume; once it has
// failed for good, delete its parameter servers) and write the status. Idempotent: every object is
// looked up by name before it is created, and a worker Job carries its attempt, so a restarted
// operator continues where the last one stopped.
#pragma once

#include <string>

#include "operator/job_status.h"
#include "operator/kube_client.h"
#include "operator/owned_objects.h"

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
  // Deletes desired's parameter-server Job (its pods too), if any: once the job has failed.
  void StopServers(const OwnedObjects& desired);
  // The same for a TrainingJob already marked Failed, from its spec.
  void StopServersOf(const Json& tj);
  // Creates `object` unless an object of its name exists; 409 AlreadyExists counts as there.
  // Returns false, creating nothing, when its owner has gone meanwhile (deleted while this pass
  // ran: the cascade took the object, which must not come back).
  bool EnsureExists(const Json& object);
  // Whether the TrainingJob in object's ownerReferences still exists with that uid and is not
  // being deleted.
  bool OwnerAlive(const Json& object);
  // The worker object (null when absent), and the failure verdict of its pods when it failed:
  // a Job's pods (its selector), an MPIJob's launcher pod (the mpi-operator's labels).
  Json ReadWorker(const Json& desired);
  std::string Verdict(const Json& worker);
  // The pods (a PodList) in worker's namespace that match the label selector.
  Json ListPods(const Json& worker, const std::string& selector);
  // The pods (a PodList) that `owner` controls, itself or through a Job it controls (the
  // mpi-operator's launcher Job): not the pods of an earlier object of the same name that the
  // garbage collector has not removed yet, whose verdict is an older attempt's.
  Json OwnedPods(const Json& pods, const Json& owner);
  // PUT /status with the TrainingJob's resourceVersion; false on 409.
  bool WriteStatus(const Json& training_job, const Json& status);
  // Whether no pod of an earlier worker of this name is left (Terminating ones included): the
  // next attempt's pods must not start beside the last one's, which still hold node 0's
  // hostname, its store and its snapshots' files until they have stopped.
  bool EarlierPodsGone(const Json& desired_worker);
  // Deletes the worker and creates `desired` (the next attempt) once its pods are gone (else
  // a later pass creates it); false when the owner went.
  bool Recreate(const Json& worker_now, const Json& desired);
  // Carries out the decision on the worker object; false when the owner went.
  bool Act(const Decision& d, const Json& tj, const Json& worker, const Json& desired_worker);

  KubeClient& client_;
};

}  // namespace cohort::k8s
