// A KServe InferenceService (serving.kserve.io/v1beta1) that serves a Triton model repository
// with the kserve-tritonserver runtime. Torch-free.
#pragma once

#include <optional>
#include <string>

namespace cohort::serving {

struct InferenceServiceSpec {
  std::string name;         // metadata.name: a DNS-1035 label (KServe's rule)
  std::string namespace_;   // metadata.namespace; empty: omitted (kubectl's current one)
  std::string storage_uri;  // the repository root (s3://, gs://, pvc://, http(s)://)
  std::string model;        // the Triton model in the repository (for the version annotation)
  int version = 0;          // the repository version this revision is rolled out for; 0: none
  // predictor.canaryTrafficPercent: the share of traffic the revision this manifest creates
  // gets, the rest staying on the last ready one (KServe's canary rollout).
  std::optional<int> canary_percent;
  bool gpu = false;  // resources.limits nvidia.com/gpu: 1 (KIND_GPU instances)
};

// The manifest as YAML (one document). Throws InvalidArgument for a name that is not a DNS-1035
// label, an empty storage URI, or a canary percent outside 0..100.
std::string RenderInferenceService(const InferenceServiceSpec& spec);

// The annotation on the predictor that records the model version: it changes the pod template,
// so a new version makes a new revision, which is what a canary rollout splits traffic against.
inline constexpr const char* kVersionAnnotation = "serving.cohort.dev/model-version";

}  // namespace cohort::serving
