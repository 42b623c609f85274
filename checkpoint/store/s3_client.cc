#include "checkpoint/store/s3_client.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>

#include "checkpoint/store/s3_xml.h"
#include "common/error.h"
#include "common/hex.h"

namespace cohort::checkpoint {
namespace {

const char* kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::string XmlCode(const http::Response& r) { return xml::First(r.body, "Code").value_or(""); }

// The transport settings of an S3 endpoint: SigV4 signing, S3's retried 400, and its XML error
// code in messages. 401/403 come back to Fail(), which names the key and the S3 error code.
http::Options HttpOptions(const S3Options& o) {
  http::Options h;
  h.service = "S3 endpoint";
  h.max_attempts = o.max_attempts;
  h.backoff_initial_s = o.backoff_initial_s;
  h.backoff_max_s = o.backoff_max_s;
  h.connect_timeout_s = o.connect_timeout_s;
  h.stall_timeout_s = o.stall_timeout_s;
  h.refusal_throws = false;
  // S3 answers 400 RequestTimeout when our upload stalled; the request itself was fine.
  h.also_retry = [](const http::Response& r) {
    return r.status == 400 && XmlCode(r) == "RequestTimeout";
  };
  h.detail = [](const http::Response& r) {
    std::string code = XmlCode(r);
    std::string message = xml::First(r.body, "Message").value_or("");
    return message.empty() || code.empty() ? code : code + ": " + message;
  };
  return h;
}

}  // namespace

std::string S3Response::ErrorCode() const { return XmlCode(*this); }
std::string S3Response::ErrorMessage() const { return xml::First(body, "Message").value_or(""); }

std::string UriEncode(const std::string& text, bool keep_slash) {
  return http::UriEncode(text, keep_slash);
}

std::string Sha256Hex(const void* data, size_t size) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data, size, digest, &len, EVP_sha256(), nullptr) != 1)
    throw Internal("EVP_Digest(SHA-256) failed");
  return Hex(digest, len);
}

S3Client::S3Client(std::string bucket, const S3Options& options)
    : bucket_(std::move(bucket)), options_(options) {
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
  http_ = std::make_unique<http::Client>(
      endpoint_,
      http::Auth::AwsSigV4(options_.access_key_id, options_.secret_access_key,
                           "aws:amz:" + options_.region + ":s3"),
      HttpOptions(options_));
}

std::string S3Client::Describe(const std::string& key) const {
  return key.empty() ? "s3://" + bucket_ : "s3://" + bucket_ + "/" + key;
}

std::string S3Client::Target(const S3Request& request) const {
  std::string target = "/" + UriEncode(bucket_, false);
  if (!request.key.empty()) target += "/" + UriEncode(request.key, true);
  if (!request.query.empty()) {
    // SigV4 signs the query as sent, and curl does not sort it: sort it here. A key without a
    // value goes as "key=" (the canonical form).
    auto query = request.query;
    std::sort(query.begin(), query.end());
    char sep = '?';
    for (const auto& [k, v] : query) {
      target += sep + UriEncode(k, false) + "=" + UriEncode(v, false);
      sep = '&';
    }
  }
  return target;
}

S3Response S3Client::Execute(const S3Request& request) {
  http::Request h;
  h.method = request.method;
  h.target = Target(request);
  h.headers = request.headers;
  h.body = request.body;
  h.body_size = request.body_size;
  h.what = request.method + " " + Describe(request.key);
  // SigV4 needs the payload hash as a header; curl signs every header we set.
  std::string payload = !options_.sign_payload   ? "UNSIGNED-PAYLOAD"
                        : request.body_size == 0 ? kEmptySha256
                                                 : Sha256Hex(request.body, request.body_size);
  h.headers.push_back("x-amz-content-sha256: " + payload);
  if (!options_.session_token.empty())
    h.headers.push_back("x-amz-security-token: " + options_.session_token);
  if (request.method == "POST") h.headers.push_back("Content-Type: application/xml");
  S3Response response;
  static_cast<http::Response&>(response) = http_->Send(h);
  return response;
}
void S3Client::Fail(const std::string& what, const S3Response& r) const {
  const std::string code = r.ErrorCode();
  const std::string message = http::OneLine(r.ErrorMessage());
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
