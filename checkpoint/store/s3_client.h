// One S3 bucket over HTTP: builds path-style URLs with sorted, encoded query strings and signs
// with libcurl's SigV4. Transport, connection reuse and retries (exponential backoff and jitter
// on 5xx, 429, connection errors and timeouts) are common/http.h's. Thread-safe: parallel part
// uploads run on separate connections.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/store/s3_options.h"
#include "common/http.h"

namespace cohort::checkpoint {

struct S3Request {
  std::string method = "GET";  // GET, HEAD, PUT, POST or DELETE
  std::string key;             // the full object key; empty for a bucket-level request
  std::vector<std::pair<std::string, std::string>> query;  // any order; sent sorted
  std::vector<std::string> headers;                        // "Name: value"
  const char* body = nullptr;                              // PUT and POST; must outlive the call
  size_t body_size = 0;
};

struct S3Response : http::Response {
  // S3's error <Code> and <Message> from the body ("" when absent, e.g. for HEAD).
  std::string ErrorCode() const;
  std::string ErrorMessage() const;
};

class S3Client {
 public:
  S3Client(std::string bucket, const S3Options& options);
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  // Sends the request, retrying as described above. Returns the answer for any status that is
  // not retried (including 4xx, which the caller judges); throws Unavailable naming the endpoint
  // when attempts run out, and InvalidArgument for an endpoint curl cannot use.
  S3Response Execute(const S3Request& request);

  // Throws the cohort error that describes a failed answer: Unauthenticated for refused
  // credentials, InvalidArgument for a missing bucket (saying how to create it) or key, and so
  // on. `what` names the operation ("PUT s3://bucket/key").
  [[noreturn]] void Fail(const std::string& what, const S3Response& response) const;

  const std::string& bucket() const { return bucket_; }
  const std::string& endpoint() const { return endpoint_; }
  const S3Options& options() const { return options_; }
  // "s3://bucket/key", for messages.
  std::string Describe(const std::string& key) const;
  uint64_t retries() const { return http_->retries(); }

 private:
  std::string Target(const S3Request& request) const;

  std::string bucket_;
  S3Options options_;
  std::string endpoint_;  // no trailing '/'
  std::unique_ptr<http::Client> http_;
};

// AWS's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ as %XX; '/' kept when keep_slash.
std::string UriEncode(const std::string& text, bool keep_slash);

// Lower-case hex SHA-256 of the bytes.
std::string Sha256Hex(const void* data, size_t size);

}  // namespace cohort::checkpoint
