// One S3 bucket over HTTP: builds path-style URLs with sorted, encoded query strings, signs with
// libcurl's SigV4, and retries with exponential backoff and jitter on 5xx, 429, connection errors
// and timeouts. Thread-safe: each request borrows its own curl easy handle from a pool, so
// parallel part uploads run on separate connections, and connections are reused across calls.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/store/s3_options.h"

namespace cohort::checkpoint {

struct S3Request {
  std::string method = "GET";  // GET, HEAD, PUT, POST or DELETE
  std::string key;             // the full object key; empty for a bucket-level request
  std::vector<std::pair<std::string, std::string>> query;  // any order; sent sorted
  std::vector<std::string> headers;                        // "Name: value"
  const char* body = nullptr;                              // PUT and POST; must outlive the call
  size_t body_size = 0;
};

struct S3Response {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-case
  std::string Header(const std::string& name) const;
  // S3's error <Code> and <Message> from the body ("" when absent, e.g. for HEAD).
  std::string ErrorCode() const;
  std::string ErrorMessage() const;
};

class S3Client {
 public:
  S3Client(std::string bucket, const S3Options& options);
  ~S3Client();
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
  uint64_t retries() const { return retries_.load(); }

  struct Attempt;  // one try of a request (defined in the .cc, used by curl's callbacks)

 private:
  void* AcquireHandle();
  void ReleaseHandle(void* handle);
  std::string Url(const S3Request& request) const;
  void Perform(void* handle, const S3Request& request, const std::string& url, Attempt* attempt);

  std::string bucket_;
  S3Options options_;
  std::string endpoint_;  // no trailing '/'
  std::string sigv4_;     // "aws:amz:<region>:s3"
  std::mutex mu_;
  std::vector<void*> idle_;  // CURL* handles, reused to keep connections alive
  std::atomic<uint64_t> retries_{0};
};

// AWS's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ as %XX; '/' kept when keep_slash.
std::string UriEncode(const std::string& text, bool keep_slash);

// Lower-case hex SHA-256 of the bytes.
std::string Sha256Hex(const void* data, size_t size);

}  // namespace cohort::checkpoint
