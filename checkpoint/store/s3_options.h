// Settings of an s3:// store: where the server is, who we are, and how hard to try.
#pragma once

#include <cstdint>
#include <string>

namespace cohort::checkpoint {

struct S3Options {
  // http(s)://host[:port], no path. Empty: https://s3.<region>.amazonaws.com.
  std::string endpoint;
  std::string region = "us-east-1";
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // temporary credentials; empty when not used

  // Objects larger than this are uploaded as multipart, in parts of this size (S3 wants >= 5 MiB
  // for all parts but the last).
  uint64_t part_size = 8ull << 20;
  int parallel_parts = 4;  // parts of one object in flight at once, each on its own connection

  int max_attempts = 6;            // per request, on 5xx, 429, connection errors and timeouts
  double backoff_initial_s = 0.1;  // doubles per retry, with full jitter, up to backoff_max_s
  double backoff_max_s = 5.0;
  double connect_timeout_s = 10;
  double stall_timeout_s = 60;  // a transfer below 1 KiB/s for this long is retried

  // Sign the SHA-256 of each body (the server then rejects a body corrupted on the way);
  // false sends UNSIGNED-PAYLOAD and saves a pass over the bytes.
  bool sign_payload = true;

  // From COHORT_S3_* and then AWS_* (see common/env.h), over the defaults above.
  static S3Options FromEnv();
};

}  // namespace cohort::checkpoint
