// What a TrainingJob becomes on the cluster: `cohort render`'s objects (launcher/render.h),
// each labelled and owned by the TrainingJob (ownerReferences, controller=true,
// blockOwnerDeletion), so that deleting it deletes them; the worker object (the Indexed Job, or
// the MPIJob) also carries its attempt and, from the first restart on, COHORT_RESTART and
// COHORT_RESUME=latest in every container.
#pragma once

#include <string>
#include <vector>

#include "operator/kube_client.h"

namespace cohort::k8s {

struct OwnedObjects {
  Json secret;                   // <name>-token with a fresh COHORT_TOKEN: created only if absent
  std::vector<Json> supporting;  // the Services and the parameter-server Job, in apply order
  Json worker;                   // the Job (or MPIJob) whose state is the TrainingJob's
};

// The TrainingJob as `cohort render` reads it: apiVersion, kind, metadata (name, namespace,
// labels) and spec, without what the API server added (uid, status, managedFields, ...).
Json SpecDocument(const Json& training_job);

// The objects for attempt `attempt` (0 first): render's, owned by the TrainingJob, with the
// worker pods told the attempt (COHORT_RESTART; COHORT_RESUME=latest after the first, and on
// the first too when there are snapshots, for a resume after spec.suspend) and told
// not to restart themselves (COHORT_MAX_RESTARTS=0; an MPIJob's runPolicy.backoffLimit 0): the
// operator restarts, up to spec.maxRestarts. Throws InvalidArgument (render's one line naming
// the field) for a spec that cannot run.
OwnedObjects DesiredObjects(const Json& training_job, const std::string& fresh_token, int attempt);

// {apiVersion, kind, name, uid, controller: true, blockOwnerDeletion: true}.
Json OwnerReference(const Json& training_job);

}  // namespace cohort::k8s
