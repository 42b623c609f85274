// The one HTTP client layer (libcurl) under S3, MLflow and any other REST service cohort talks
// to: reused connections, per-attempt timeouts, retries with exponential backoff and jitter on
// 5xx, 429, timeouts and connection errors (Retry-After honoured), bearer/basic/SigV4 auth, and
// one-line errors that name the server, the method, the path and the status.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace cohort::http {

// How requests authenticate. SigV4 is libcurl's CURLOPT_AWS_SIGV4 with user = key id and
// password = secret; the caller adds x-amz-content-sha256 itself (see ../shared/ENV.md).
struct Auth {
  enum class Kind { kNone, kBearer, kBasic, kAwsSigV4 };
  Kind kind = Kind::kNone;
  std::string token;     // kBearer
  std::string user;      // kBasic, kAwsSigV4 (access key id)
  std::string password;  // kBasic, kAwsSigV4 (secret key)
  std::string sigv4;     // kAwsSigV4: "aws:amz:<region>:<service>"

  static Auth None() { return {}; }
  static Auth Bearer(std::string token);
  static Auth Basic(std::string user, std::string password);
  static Auth AwsSigV4(std::string key_id, std::string secret, std::string provider);
};

struct Request {
  std::string method = "GET";  // GET, HEAD, PUT, POST, PATCH or DELETE
  // Path and query, already encoded, starting with '/': "/api/2.0/mlflow/runs/get?run_id=x".
  std::string target;
  std::vector<std::string> headers;  // "Name: value"
  const char* body = nullptr;        // must outlive the call
  size_t body_size = 0;
  // Names the operation in messages ("PUT s3://bucket/key"); empty: "<method> <path>".
  std::string what;

  // Points the body at `text` (which must outlive the call).
  void SetBody(const std::string& text) {
    body = text.data();
    body_size = text.size();
  }
};

struct Response {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-case
  std::string Header(const std::string& name) const;
};

// How a streamed answer (Client::Stream) ended.
struct StreamResult {
  enum class End {
    kStopped,   // on_data returned false: the transfer was cut there (its connection closed)
    kEnded,     // the server finished the answer (or it was not 2xx: see response)
    kTimedOut,  // timeout_s passed first
  };
  End end = End::kEnded;
  Response response;  // status and headers; the body only of an answer that was not 2xx
};

struct Options {
  // Names the server in messages: "<service> <base url>", e.g. "MLflow server http://h:5000".
  std::string service = "HTTP server";
  int max_attempts = 6;            // per request, on the retried failures above
  double backoff_initial_s = 0.1;  // doubles per retry, half fixed and half jitter
  double backoff_max_s = 5.0;      // cap of one backoff step
  double max_retry_after_s = 60;   // a longer Retry-After is cut to this
  double connect_timeout_s = 10;
  double stall_timeout_s = 60;   // a transfer below 1 KiB/s for this long is a retried timeout
  double request_timeout_s = 0;  // whole attempt, 0: none (stall_timeout_s still applies)
  // Throw Unauthenticated on 401/403 (with auth_hint), instead of returning the answer.
  bool refusal_throws = true;
  std::string auth_hint;  // "check MLFLOW_TRACKING_TOKEN", appended to refusals
  // Extra retried answers beyond 5xx and 429 (S3's 400 RequestTimeout).
  std::function<bool(const Response&)> also_retry;
  // A short reason from an error body for messages (S3's <Code>, MLflow's error_code).
  std::function<std::string(const Response&)> detail;
  // Polled between attempts and during backoff: true gives up at once (Unavailable).
  std::function<bool()> cancelled;
  // https:// only. Empty fields keep curl's defaults (the system's CAs, no client certificate).
  struct Tls {
    std::string ca_file, ca_pem;      // the CA bundle that verifies the server: a file, or PEM text
    std::string cert_file, cert_pem;  // a client certificate (PEM): a file, or the text
    std::string key_file, key_pem;    // its private key (PEM)
    bool insecure_skip_verify = false;  // no check of the server's certificate or name
  } tls;
};

// One server (scheme://host[:port]). Thread-safe: each request borrows its own curl handle
// from a pool, so parallel requests run on separate connections that are kept alive.
class Client {
 public:
  // Throws InvalidArgument when base_url is not http(s)://host[:port].
  Client(std::string base_url, Auth auth, Options options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends the request, retrying as described above. Returns the answer for any status that is
  // not retried (a 4xx is the caller's to judge, except refusals when refusal_throws). Throws
  // Unavailable naming server, operation and last problem when attempts run out or
  // `cancelled` says so, InvalidArgument when curl cannot use the URL, Unauthenticated on a
  // refusal.
  Response Send(const Request& request);

  // One attempt at a request whose answer is a stream (a watch): a 2xx answer's body goes to
  // on_data piece by piece as it arrives, not into the response. No retries (what was delivered
  // cannot be taken back: the caller decides, e.g. resumes from what it saw), no stall limit (a
  // stream may be quiet for long); timeout_s bounds the whole transfer. Throws Unavailable
  // naming server and operation when it cannot connect or the stream breaks off (the server
  // died), InvalidArgument as Send does, and rethrows what on_data threw (which stops the
  // transfer).
  StreamResult Stream(const Request& request, double timeout_s,
                      const std::function<bool(std::string_view)>& on_data);

  // "<service> <base url>", for messages.
  std::string Name() const { return options_.service + " " + base_url_; }
  const std::string& base_url() const { return base_url_; }
  const Options& options() const { return options_; }
  // Retries made so far (attempts beyond the first of each request).
  uint64_t retries() const { return retries_.load(); }

  struct Attempt;  // one try (defined in the .cc, used by curl's callbacks)

 private:
  void* AcquireHandle();
  void ReleaseHandle(void* handle);
  void Perform(void* handle, const Request& request, Attempt* attempt) const;
  // One transfer on a pooled handle: the handle goes back to the pool after a clean transfer and
  // is dropped after a failed one (it may leave the connection in any state).
  void Transfer(const Request& request, Attempt* attempt);
  void SetAuth(void* handle) const;
  bool Retryable(const Attempt& attempt, std::string* problem) const;
  [[noreturn]] void ThrowRefused(const std::string& what, const Response& response) const;
  // The one-line message when attempts run out or the caller cancelled.
  std::string GaveUp(const std::string& what, bool reached, const std::string& problem,
                     int attempts, double seconds) const;

  std::string base_url_;  // no trailing '/'
  Auth auth_;
  Options options_;
  std::mutex mu_;
  std::vector<void*> idle_;  // CURL* handles, reused to keep connections alive
  std::atomic<uint64_t> retries_{0};
};

// Seconds from a Retry-After value (delta-seconds or an HTTP date); -1 when absent or unusable.
double ParseRetryAfter(const std::string& value);

// The pause before retry number `retry` (0-based): exponential, "equal jitter" (half the step
// fixed, half random) so many clients spread out without ever retrying at once, and at least
// the server's Retry-After (itself capped at max_retry_after_s).
double BackoffSeconds(const Options& options, int retry, double retry_after_s);

// Text with newlines replaced by spaces, cut to max_chars (with "..."), for one-line messages.
std::string OneLine(std::string text, size_t max_chars = 300);

// Percent-encodes everything but A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash).
std::string UriEncode(const std::string& text, bool keep_slash);

}  // namespace cohort::http
