#include "checkpoint/store/s3_client.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "checkpoint/store/s3_xml.h"
#include "common/error.h"
#include "common/log.h"

namespace cohort::checkpoint {

struct S3Client::Attempt {
  CURLcode code = CURLE_OK;
  char error[CURL_ERROR_SIZE] = {0};
  S3Response response;
  const S3Request* request = nullptr;
  size_t read_offset = 0;  // into request->body, for uploads
};

namespace {

const char* kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  static_cast<S3Response*>(user)->body.append(data, size * n);
  return size * n;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* attempt = static_cast<S3Client::Attempt*>(user);
  auto* response = &attempt->response;
  std::string line(data, size * n);
  // A new status line (after 100 Continue or a redirect) starts a new header block.
  if (line.rfind("HTTP/", 0) == 0) {
    response->headers.clear();
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  size_t begin = line.find_first_not_of(" \t", colon + 1);
  size_t end = line.find_last_not_of(" \t\r\n");
  response->headers[name] =
      begin == std::string::npos || end < begin ? "" : line.substr(begin, end - begin + 1);
  // Avoid regrowing large bodies (a HEAD's length is the object's, with no body to hold).
  if (name == "content-length" && attempt->request->method != "HEAD")
    response->body.reserve(std::strtoull(response->headers[name].c_str(), nullptr, 10));
  return size * n;
}

size_t OnRead(char* buffer, size_t size, size_t n, void* user) {
  auto* attempt = static_cast<S3Client::Attempt*>(user);
  size_t left = attempt->request->body_size - attempt->read_offset;
  size_t take = std::min(left, size * n);
  if (take > 0) std::memcpy(buffer, attempt->request->body + attempt->read_offset, take);
  attempt->read_offset += take;
  return take;
}

int OnSeek(void* user, curl_off_t offset, int origin) {
  auto* attempt = static_cast<S3Client::Attempt*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<size_t>(offset) > attempt->request->body_size)
    return CURL_SEEKFUNC_FAIL;
  attempt->read_offset = static_cast<size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

bool RetryableStatus(const S3Response& r) {
  if (r.status == 429 || r.status == 500 || r.status == 502 || r.status == 503 || r.status == 504)
    return true;
  // S3 answers 400 RequestTimeout when our upload stalled; the request itself was fine.
  return r.status == 400 && r.ErrorCode() == "RequestTimeout";
}

bool RetryableCurl(CURLcode code) {
  switch (code) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_NOT_BUILT_IN:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_LOGIN_DENIED:
      return false;
    default:
      return true;
  }
}

// Exponential backoff with "equal jitter": half the step fixed, half random, so retries from
// many writers spread out without ever retrying immediately.
std::chrono::milliseconds Backoff(const S3Options& o, int attempt) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  double step = std::min(o.backoff_max_s,
                         o.backoff_initial_s * static_cast<double>(1 << std::min(attempt, 20)));
  double s = step / 2 + std::uniform_real_distribution<double>(0, step / 2)(rng);
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
}

std::string OneLine(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  return text;
}

}  // namespace

std::string S3Response::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

std::string S3Response::ErrorCode() const { return xml::First(body, "Code").value_or(""); }
std::string S3Response::ErrorMessage() const { return xml::First(body, "Message").value_or(""); }

std::string UriEncode(const std::string& text, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (c == '/' && keep_slash)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string Sha256Hex(const void* data, size_t size) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data, size, digest, &len, EVP_sha256(), nullptr) != 1)
    throw Internal("EVP_Digest(SHA-256) failed");
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

S3Client::S3Client(std::string bucket, const S3Options& options)
    : bucket_(std::move(bucket)), options_(options) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  endpoint_ = options_.endpoint.empty()
                  ? fmt::format("https://s3.{}.amazonaws.com", options_.region)
                  : options_.endpoint;
  while (!endpoint_.empty() && endpoint_.back() == '/') endpoint_.pop_back();
  if (endpoint_.rfind("http://", 0) != 0 && endpoint_.rfind("https://", 0) != 0)
    throw InvalidArgument(fmt::format(
        "S3 endpoint '{}' must start with http:// or https:// (set COHORT_S3_ENDPOINT or "
        "AWS_ENDPOINT_URL, e.g. http://127.0.0.1:9000)",
        options_.endpoint));
  if (options_.region.empty()) options_.region = "us-east-1";
  sigv4_ = "aws:amz:" + options_.region + ":s3";
}

S3Client::~S3Client() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

std::string S3Client::Describe(const std::string& key) const {
  return key.empty() ? "s3://" + bucket_ : "s3://" + bucket_ + "/" + key;
}

void* S3Client::AcquireHandle() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  CURL* h = curl_easy_init();
  if (h == nullptr) throw Internal("curl_easy_init() failed");
  return h;
}

void S3Client::ReleaseHandle(void* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(handle);
}

std::string S3Client::Url(const S3Request& request) const {
  std::string url = endpoint_ + "/" + UriEncode(bucket_, false);
  if (!request.key.empty()) url += "/" + UriEncode(request.key, true);
  if (!request.query.empty()) {
    // SigV4 signs the query as sent, and curl does not sort it: sort it here. A key without a
    // value goes as "key=" (the canonical form).
    auto query = request.query;
    std::sort(query.begin(), query.end());
    char sep = '?';
    for (const auto& [k, v] : query) {
      url += sep + UriEncode(k, false) + "=" + UriEncode(v, false);
      sep = '&';
    }
  }
  return url;
}

void S3Client::Perform(void* handle, const S3Request& request, const std::string& url,
                       Attempt* attempt) {
  CURL* h = static_cast<CURL*>(handle);
  curl_easy_reset(h);  // keeps the live connection
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, attempt->error);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.connect_timeout_s * 1000));
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                   std::max(1L, static_cast<long>(options_.stall_timeout_s)));
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4_.c_str());
  curl_easy_setopt(h, CURLOPT_USERNAME, options_.access_key_id.c_str());
  curl_easy_setopt(h, CURLOPT_PASSWORD, options_.secret_access_key.c_str());
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &attempt->response);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, attempt);
  curl_slist* headers = nullptr;
  for (const auto& line : request.headers) headers = curl_slist_append(headers, line.c_str());
  // curl sends "Expect: 100-continue" before large bodies and then waits up to a second for
  // the server's go-ahead; send the body right away instead. (Removing the header with "Expect:"
  // is not an option: curl's SigV4 signs the removed header and the signature no longer matches.)
  curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  if (request.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (request.method == "PUT") {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(h, CURLOPT_READDATA, attempt);
    curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, OnSeek);
    curl_easy_setopt(h, CURLOPT_SEEKDATA, attempt);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body_size));
  } else if (request.method == "POST") {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body ? request.body : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body_size));
  } else if (request.method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  attempt->code = curl_easy_perform(h);
  curl_slist_free_all(headers);
  if (attempt->code == CURLE_OK)
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &attempt->response.status);
}

S3Response S3Client::Execute(const S3Request& request) {
  // SigV4 needs the payload hash as a header; curl signs every header we set.
  S3Request signed_request = request;
  std::string payload = !options_.sign_payload   ? "UNSIGNED-PAYLOAD"
                        : request.body_size == 0 ? kEmptySha256
                                                 : Sha256Hex(request.body, request.body_size);
  signed_request.headers.push_back("x-amz-content-sha256: " + payload);
  if (!options_.session_token.empty())
    signed_request.headers.push_back("x-amz-security-token: " + options_.session_token);
  if (request.method == "POST") signed_request.headers.push_back("Content-Type: application/xml");
  const std::string url = Url(request);
  const std::string what = request.method + " " + Describe(request.key);
  const auto start = std::chrono::steady_clock::now();

  for (int attempt_no = 1;; ++attempt_no) {
    Attempt attempt;
    attempt.request = &signed_request;
    void* handle = AcquireHandle();
    try {
      Perform(handle, signed_request, url, &attempt);
    } catch (...) {
      curl_easy_cleanup(static_cast<CURL*>(handle));
      throw;
    }
    if (attempt.code == CURLE_OK) {
      ReleaseHandle(handle);
    } else {
      // A failed transfer may leave the connection in any state: do not reuse it.
      curl_easy_cleanup(static_cast<CURL*>(handle));
    }

    std::string problem;
    if (attempt.code != CURLE_OK) {
      problem = fmt::format("{}{}{}", curl_easy_strerror(attempt.code),
                            attempt.error[0] ? ": " : "", attempt.error);
      if (!RetryableCurl(attempt.code))
        throw InvalidArgument(fmt::format("S3 endpoint {} cannot be used for {}: {}", endpoint_,
                                          what, OneLine(problem)));
    } else if (RetryableStatus(attempt.response)) {
      std::string code = attempt.response.ErrorCode();
      problem = fmt::format("HTTP {}{}{}", attempt.response.status, code.empty() ? "" : " ", code);
    } else {
      return std::move(attempt.response);
    }

    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (attempt_no >= options_.max_attempts) {
      if (attempt.code != CURLE_OK)
        throw Unavailable(fmt::format(
            "cannot reach S3 endpoint {} for {}: {} (after {} attempts in {:.1f} s); check "
            "COHORT_S3_ENDPOINT / AWS_ENDPOINT_URL and that the server is up",
            endpoint_, what, OneLine(problem), attempt_no, elapsed));
      throw Unavailable(
          fmt::format("S3 endpoint {} kept failing {}: {}{}{} (after {} attempts in "
                      "{:.1f} s)",
                      endpoint_, what, problem, attempt.response.ErrorMessage().empty() ? "" : ": ",
                      OneLine(attempt.response.ErrorMessage()), attempt_no, elapsed));
    }
    auto pause = Backoff(options_, attempt_no - 1);
    retries_++;
    COHORT_DEBUG(kCheckpoint, "S3 {}: {} (attempt {}/{}); retrying in {} ms", what,
                 OneLine(problem), attempt_no, options_.max_attempts, pause.count());
    std::this_thread::sleep_for(pause);
  }
}

void S3Client::Fail(const std::string& what, const S3Response& r) const {
  const std::string code = r.ErrorCode();
  const std::string message = OneLine(r.ErrorMessage());
  const std::string detail = code.empty() ? fmt::format("HTTP {}", r.status)
                                          : fmt::format("HTTP {} {}{}{}", r.status, code,
                                                        message.empty() ? "" : ": ", message);
  if (code == "NoSuchBucket")
    throw InvalidArgument(fmt::format(
        "S3 bucket '{}' does not exist at {} ({}); create it (e.g. aws --endpoint-url {} s3 mb "
        "s3://{}) or fix the checkpoint URI",
        bucket_, endpoint_, what, endpoint_, bucket_));
  static const char* kAuthCodes[] = {"SignatureDoesNotMatch", "InvalidAccessKeyId",
                                     "AccessDenied",          "ExpiredToken",
                                     "InvalidToken",          "AuthorizationHeaderMalformed",
                                     "InvalidClientTokenId",  "MissingSecurityHeader"};
  bool auth = r.status == 401 || r.status == 403;
  for (const char* c : kAuthCodes) auth = auth || code == c;
  if (auth)
    throw Unauthenticated(fmt::format(
        "S3 endpoint {} refused {} for access key '{}': {}; check COHORT_S3_ACCESS_KEY_ID / "
        "COHORT_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the "
        "region ({})",
        endpoint_, what, options_.access_key_id, detail, options_.region));
  if (r.status == 301 || code == "PermanentRedirect")
    throw InvalidArgument(
        fmt::format("S3 endpoint {} redirected {} ({}): bucket '{}' is in "
                    "another region than '{}'; set COHORT_S3_REGION/AWS_REGION",
                    endpoint_, what, detail, bucket_, options_.region));
  if (r.status >= 500)
    throw Unavailable(fmt::format("S3 endpoint {} failed {}: {}", endpoint_, what, detail));
  throw InvalidArgument(fmt::format("S3 endpoint {} rejected {}: {}", endpoint_, what, detail));
}

}  // namespace cohort::checkpoint
