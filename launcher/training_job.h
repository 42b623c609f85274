// A TrainingJob (apiVersion cohort.dev/v1alpha1, kind TrainingJob): the one description of a
// cohort job that `cohort render` turns into manifests (and that the operator reconciles).
//
//   apiVersion: cohort.dev/v1alpha1
//   kind: TrainingJob
//   metadata: {name: fmnist, namespace: ..., labels: {...}}   # name: DNS label, <= 48 chars
//   spec:
//     image: cohort-train:0.1.0          # required
//     command: [/opt/cohort/bin/fashion_mnist]   # required: the training program
//     args: [--epochs, "2"]
//     nnodes: 2                          # N or "MIN:MAX" (default 1)
//     nprocPerNode: 4                    # N or auto (default 1)
//     backend: auto                      # auto | gloo | nccl | mpi | ps
//     resources: {gpus: 4, requests: {...}, limits: {...}}   # per pod; gpus = nvidia.com/gpu
//     checkpointURI: s3://bucket/run
//     maxRestarts: 3                     # group restarts (mpi: launcher retries)
//     psServers: 2                       # backend ps only: parameter-server shards
//     register: fmnist                   # COHORT_REGISTER: register the model at the end
//     suspend: false                     # create the Job suspended
//     env: [{name: X, value: "1"}]       # more container env (Kubernetes EnvVar)
//     podTemplate: {metadata: {...}, spec: {...}}   # merged into every pod render emits
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/env.h"

namespace cohort::launcher {

struct TrainingJob {
  std::string name;
  std::string ns;                 // metadata.namespace; empty: none written
  nlohmann::ordered_json labels;  // metadata.labels (an object, maybe empty)
  std::string image;
  std::vector<std::string> program;  // spec.command then spec.args
  int min_nodes = 1;
  int max_nodes = 1;
  std::string nnodes;                // as COHORT_NNODES takes it: "2" or "2:4"
  std::string nproc_per_node = "1";  // "4" or "auto"
  std::string backend = "auto";
  nlohmann::ordered_json resources;  // a ResourceRequirements object (requests, limits)
  std::string checkpoint_uri;
  int max_restarts = -1;  // -1: not given
  int ps_servers = 0;
  std::string register_name;
  bool suspend = false;
  nlohmann::ordered_json env;           // an array of EnvVar
  nlohmann::ordered_json pod_template;  // an object {metadata, spec}, maybe empty
};

// The backends a TrainingJob may name.
inline const std::vector<std::string> kTrainingJobBackends = {"auto", "gloo", "nccl", "mpi", "ps"};

// The env variables render sets from the spec, which spec.env may not set itself.
inline const std::vector<std::string> kRenderedEnv = {
    env::kNNodes.name(),       env::kNprocPerNode.name(), env::kNodeRank.name(),
    env::kRdzvEndpoint.name(), env::kRunId.name(),        env::kToken.name(),
    env::kBackend.name(),      env::kMaxRestarts.name(),  env::kCheckpointUri.name(),
    env::kPsServers.name(),    env::kRegister.name()};

// Checks and reads a TrainingJob document. Throws InvalidArgument with one line that names the
// field (e.g. "spec.nnodes") and says how to fix it; unknown fields are errors too.
TrainingJob ParseTrainingJob(const nlohmann::ordered_json& doc);

}  // namespace cohort::launcher
