#include "serving/inference_service.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cctype>

#include "common/error.h"

namespace cohort::serving {
namespace {

// KServe names InferenceServices by DNS-1035 labels: lowercase letters, digits and '-',
// starting with a letter, ending with a letter or digit, at most 63 characters.
void CheckServiceName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 63 && std::islower(static_cast<unsigned char>(name[0]));
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::islower(u) || std::isdigit(u) || c == '-')) ok = false;
  }
  if (ok && name.back() == '-') ok = false;
  if (!ok)
    throw InvalidArgument(fmt::format(
        "InferenceService name '{}' is not a DNS-1035 label (lowercase letters, digits and '-', "
        "starting with a letter, at most 63); pass --service-name",
        name));
}

YAML::Node Predictor(const InferenceServiceSpec& s) {
  YAML::Node model;
  model["modelFormat"]["name"] = "pytorch";
  model["runtime"] = "kserve-tritonserver";
  model["protocolVersion"] = "v2";
  model["storageUri"] = s.storage_uri;
  if (s.gpu) model["resources"]["limits"]["nvidia.com/gpu"] = "1";
  YAML::Node predictor;
  if (s.version > 0)
    predictor["annotations"][kVersionAnnotation] = fmt::format("{}/{}", s.model, s.version);
  if (s.canary_percent) predictor["canaryTrafficPercent"] = *s.canary_percent;
  predictor["model"] = model;
  return predictor;
}

}  // namespace

std::string RenderInferenceService(const InferenceServiceSpec& s) {
  CheckServiceName(s.name);
  if (s.storage_uri.empty())
    throw InvalidArgument("InferenceService: storageUri is empty; pass the repository's URI");
  if (s.canary_percent && (*s.canary_percent < 0 || *s.canary_percent > 100))
    throw InvalidArgument(fmt::format("--canary-percent {} is outside 0..100", *s.canary_percent));
  YAML::Node doc;
  doc["apiVersion"] = "serving.kserve.io/v1beta1";
  doc["kind"] = "InferenceService";
  doc["metadata"]["name"] = s.name;
  if (!s.namespace_.empty()) doc["metadata"]["namespace"] = s.namespace_;
  doc["spec"]["predictor"] = Predictor(s);
  YAML::Emitter out;
  out << doc;
  return std::string(out.c_str()) + "\n";
}

}  // namespace cohort::serving
