// Pieces render.cc and render_mpi.cc share: object metadata, the token's env entry, and the
// merge of a TrainingJob's podTemplate into the pod templates render emits. Internal to render.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "launcher/render.h"
#include "launcher/training_job.h"

namespace cohort::launcher::render {

using Json = nlohmann::ordered_json;

inline constexpr int kRdzvPort = 29500;  // the launcher's default rendezvous port
inline constexpr int kPsPort = 29600;    // what each `cohort ps-server` pod listens on
// Longer than the launcher's SIGTERM-to-SIGKILL grace period (20 s), with room for the
// on-SIGTERM checkpoint.
inline constexpr int kTerminationGraceSeconds = 45;

// {"app.kubernetes.io/name": job.name} plus the TrainingJob's own labels.
Json Labels(const TrainingJob& job);

// {name, namespace (when given), labels}.
Json Metadata(const TrainingJob& job, const std::string& name);

// The COHORT_TOKEN env entry (a secretKeyRef), or null with insecure_no_token.
Json TokenEnv(const TrainingJob& job, const RenderOptions& options);

// {name: value} as an EnvVar.
Json EnvValue(const std::string& name, const std::string& value);

// An EnvVar read from the pod's own metadata through the downward API.
Json EnvField(const std::string& name, const std::string& field_path);

// Merges job.pod_template into a pod template ({metadata, spec}) whose training container is
// spec.containers[0]: mappings merge, lists append, and a podTemplate container named
// "cohort" merges into that container. A scalar render already set to another value is an
// error naming spec.podTemplate's field, as is any other container.
void MergePodTemplate(const TrainingJob& job, Json& pod_template);

// The MPIJob (render_mpi.cc).
Json MpiJob(const TrainingJob& job, const RenderOptions& options);

}  // namespace cohort::launcher::render
