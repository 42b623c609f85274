// `cohort render`'s library: a TrainingJob (launcher/training_job.h) becomes plain Kubernetes
// objects that run it, with cohort's env contract filled in:
//   - backends auto, gloo, nccl: a headless Service + an Indexed Job whose pods run
//     `cohort launch` (node rank = JOB_COMPLETION_INDEX, node 0 at <name>-0.<name>:29500);
//   - backend ps: the same, plus a headless Service + an Indexed Job <name>-ps of
//     `cohort ps-server` shards, which the workers find through COHORT_PS_SERVERS;
//   - backend mpi: a Kubeflow MPIJob (kubeflow.org/v2beta1) whose launcher runs mpirun;
//   - and, unless told otherwise, a Secret <name>-token with the job's COHORT_TOKEN, which
//     every pod reads through a secretKeyRef (the token is never written into a pod's env).
// The operator reconciles a TrainingJob into the same objects.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace cohort::launcher {

struct RenderOptions {
  // The token the emitted Secret holds: fresh for every render (RandomToken()).
  std::string token;
  // Instead of emitting a Secret, reference this existing one (key "token"): deterministic
  // output, for manifests kept in a repository.
  std::string token_secret;
  // No Secret and no COHORT_TOKEN: anyone who reaches the rendezvous port can join the job.
  bool insecure_no_token = false;
};

// 32 hex digits (128 bits) from std::random_device. Throws Unavailable if it fails.
std::string RandomToken();

// The objects, in the order to apply them (Secret, Services, Jobs), as a v1 List:
// {"apiVersion": "v1", "kind": "List", "items": [...]}. Throws InvalidArgument (one line naming
// the field and the fix) for a bad spec, and when options give no token at all (neither token,
// token_secret nor insecure_no_token) or more than one kind of token.
nlohmann::ordered_json RenderTrainingJob(const nlohmann::ordered_json& doc,
                                         const RenderOptions& options);

// The List's items as a YAML stream: `header` (comment lines, each starting with "# ", may be
// empty), then the documents separated by "---".
std::string ListToYamlStream(const nlohmann::ordered_json& list, const std::string& header);

}  // namespace cohort::launcher
