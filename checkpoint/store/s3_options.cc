#include "checkpoint/store/s3_options.h"

#include <fmt/format.h>

#include "common/env.h"
#include "common/error.h"

namespace cohort::checkpoint {
namespace {

std::string First(const env::Var& preferred, const env::Var& fallback, const std::string& dflt) {
  if (auto v = preferred.Get()) return *v;
  if (auto v = fallback.Get()) return *v;
  return dflt;
}

}  // namespace

S3Options S3Options::FromEnv() {
  S3Options o;
  o.endpoint = First(env::kS3Endpoint, env::kAwsEndpointUrl, "");
  o.region = First(env::kS3Region, env::kAwsRegion, env::kAwsDefaultRegion.Str(o.region));
  o.access_key_id = First(env::kS3AccessKeyId, env::kAwsAccessKeyId, "");
  o.secret_access_key = First(env::kS3SecretAccessKey, env::kAwsSecretAccessKey, "");
  o.session_token = First(env::kS3SessionToken, env::kAwsSessionToken, "");
  int64_t part = env::kS3PartSize.Int(static_cast<int64_t>(o.part_size));
  if (part < (5 << 20))
    throw InvalidArgument(fmt::format("{}={} is below S3's minimum part size of 5 MiB (5242880)",
                                      env::kS3PartSize.name(), part));
  o.part_size = static_cast<uint64_t>(part);
  o.parallel_parts = static_cast<int>(env::kS3ParallelParts.Int(o.parallel_parts));
  if (o.parallel_parts < 1 || o.parallel_parts > 64)
    throw InvalidArgument(fmt::format("{}={} must be between 1 and 64",
                                      env::kS3ParallelParts.name(), o.parallel_parts));
  o.max_attempts = static_cast<int>(env::kS3MaxAttempts.Int(o.max_attempts));
  if (o.max_attempts < 1)
    throw InvalidArgument(
        fmt::format("{}={} must be at least 1", env::kS3MaxAttempts.name(), o.max_attempts));
  o.connect_timeout_s = env::kS3ConnectTimeout.Seconds(o.connect_timeout_s);
  o.stall_timeout_s = env::kS3StallTimeout.Seconds(o.stall_timeout_s);
  return o;
}

}  // namespace cohort::checkpoint
