#include "common/env.h"

#include <fmt/format.h>

#include <cctype>
#include <cstdlib>

#include "common/error.h"

extern char** environ;

namespace cohort::env {
namespace {

[[noreturn]] void Bad(const Var& var, const std::string& value, const char* want) {
  throw InvalidArgument(
      fmt::format("{}='{}' is not {}; set it to {} or unset it", var.name(), value, want, want));
}

}  // namespace

std::optional<std::string> Var::Get(const Map* from) const {
  if (from != nullptr) {
    auto it = from->find(name_);
    if (it == from->end() || it->second.empty()) return std::nullopt;
    return it->second;
  }
  const char* v = std::getenv(name_);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

std::string Var::Str(const std::string& fallback, const Map* from) const {
  return Get(from).value_or(fallback);
}

int64_t Var::Int(int64_t fallback, const Map* from) const {
  auto v = Get(from);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (errno != 0 || end == v->c_str() || *end != '\0') Bad(*this, *v, "an integer");
  return x;
}

bool Var::Bool(bool fallback, const Map* from) const {
  auto v = Get(from);
  if (!v) return fallback;
  std::string s;
  for (char c : *v) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  Bad(*this, *v, "a boolean (1 or 0)");
}

double Var::Seconds(double fallback, const Map* from) const {
  auto v = Get(from);
  if (!v) return fallback;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || *end != '\0' || !(x >= 0)) Bad(*this, *v, "a number of seconds");
  return x;
}

const std::vector<const Var*>& All() {
  static const std::vector<const Var*> all = {&kRank,
                                              &kWorldSize,
                                              &kLocalRank,
                                              &kLocalWorldSize,
                                              &kNodeRank,
                                              &kNNodes,
                                              &kStore,
                                              &kToken,
                                              &kInsecureStore,
                                              &kRunId,
                                              &kRestart,
                                              &kBackend,
                                              &kCheckpointUri,
                                              &kResume,
                                              &kCheckpointEvery,
                                              &kCheckpointKeep,
                                              &kNprocPerNode,
                                              &kRdzvEndpoint,
                                              &kRdzvUser,
                                              &kRdzvPassword,
                                              &kMaxRestarts,
                                              &kHeartbeatTimeout,
                                              &kTerminationLog,
                                              &kLogLevel,
                                              &kLogSubsys,
                                              &kTimeout,
                                              &kStoreTimeout,
                                              &kHeartbeat,
                                              &kDebugCollectives,
                                              &kMallocTune,
                                              &kGlooHost,
                                              &kPsServers,
                                              &kPsPartitionBytes,
                                              &kShm,
                                              &kHier,
                                              &kHierHost,
                                              &kProgress,
                                              &kS3Endpoint,
                                              &kS3Region,
                                              &kS3AccessKeyId,
                                              &kS3SecretAccessKey,
                                              &kS3SessionToken,
                                              &kS3PartSize,
                                              &kS3ParallelParts,
                                              &kS3MaxAttempts,
                                              &kS3ConnectTimeout,
                                              &kS3StallTimeout,
                                              &kAwsEndpointUrl,
                                              &kAwsRegion,
                                              &kAwsDefaultRegion,
                                              &kAwsAccessKeyId,
                                              &kAwsSecretAccessKey,
                                              &kAwsSessionToken,
                                              &kMlflowTrackingUri,
                                              &kMlflowExperimentName,
                                              &kMlflowRunId,
                                              &kMlflowTrackingToken,
                                              &kMlflowTrackingUsername,
                                              &kMlflowTrackingPassword,
                                              &kTorchRank,
                                              &kTorchWorldSize,
                                              &kTorchLocalRank,
                                              &kTorchLocalWorldSize,
                                              &kMasterAddr,
                                              &kMasterPort,
                                              &kOmpiRank,
                                              &kOmpiSize,
                                              &kOmpiLocalRank,
                                              &kOmpiLocalSize,
                                              &kOmpiJobId,
                                              &kJobCompletionIndex,
                                              &kPetNprocPerNode,
                                              &kPetNNodes,
                                              &kSlurmProcId,
                                              &kSlurmNTasks,
                                              &kSlurmLocalId,
                                              &kSlurmNodeId,
                                              &kSlurmNNodes,
                                              &kSlurmJobNodelist,
                                              &kKubernetesServiceHost,
                                              &kKubernetesServicePort,
                                              &kKubeconfig};
  return all;
}

Map Snapshot() {
  Map out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

}  // namespace cohort::env
