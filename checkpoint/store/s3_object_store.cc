#include "checkpoint/store/s3_object_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <limits>

#include "checkpoint/store/key.h"
#include "checkpoint/store/s3_client.h"
#include "checkpoint/store/s3_multipart.h"
#include "checkpoint/store/s3_xml.h"
#include "common/error.h"
#include "common/log.h"

namespace cohort::checkpoint {

S3ObjectStore::S3ObjectStore(std::string bucket, std::string prefix, const S3Options& options)
    : bucket_(std::move(bucket)),
      prefix_(std::move(prefix)),
      client_(std::make_shared<S3Client>(bucket_, options)) {}

S3ObjectStore::~S3ObjectStore() = default;

std::string S3ObjectStore::Uri() const {
  return prefix_.empty() ? "s3://" + bucket_ : "s3://" + bucket_ + "/" + prefix_;
}

uint64_t S3ObjectStore::RetryCount() const { return client_->retries(); }
const S3Options& S3ObjectStore::options() const { return client_->options(); }

std::string S3ObjectStore::FullKey(const std::string& key) const {
  internal::ValidateKey(Uri(), key);
  return internal::JoinKey(prefix_, key);
}

std::unique_ptr<ObjectWriter> S3ObjectStore::NewWriter(const std::string& key) {
  return std::make_unique<S3Writer>(client_, FullKey(key));
}

std::optional<std::string> S3ObjectStore::Get(const std::string& key) {
  S3Request request;
  request.key = FullKey(key);
  S3Response response = client_->Execute(request);
  if (response.status == 200) return std::move(response.body);
  if (response.status == 404 && response.ErrorCode() != "NoSuchBucket") return std::nullopt;
  client_->Fail("GET " + client_->Describe(request.key), response);
}

std::string S3ObjectStore::GetRange(const std::string& key, uint64_t offset, uint64_t length) {
  const std::string full = FullKey(key);
  if (length == 0) {
    // A zero-length Range cannot be expressed; the answer is "" if the object exists.
    if (!Head(key)) throw InvalidArgument(fmt::format("{}: no object '{}' to read", Uri(), key));
    return "";
  }
  uint64_t last = offset + std::min(length, std::numeric_limits<uint64_t>::max() - offset) - 1;
  S3Request request;
  request.key = full;
  request.headers.push_back(fmt::format("Range: bytes={}-{}", offset, last));
  S3Response response = client_->Execute(request);
  if (response.status == 206) return std::move(response.body);
  if (response.status == 200) {  // a server that ignores Range sends the whole object
    if (offset >= response.body.size()) return "";
    return response.body.substr(offset, length);
  }
  if (response.status == 416) return "";  // the range starts at or past the end
  if (response.status == 404 && response.ErrorCode() != "NoSuchBucket")
    throw InvalidArgument(fmt::format("{}: no object '{}' to read", Uri(), key));
  client_->Fail("GET (range) " + client_->Describe(full), response);
}

std::optional<ObjectInfo> S3ObjectStore::Head(const std::string& key) {
  S3Request request;
  request.method = "HEAD";
  request.key = FullKey(key);
  S3Response response = client_->Execute(request);
  // HEAD answers carry no body, so a missing bucket also reads as "no such object" here.
  if (response.status == 404) return std::nullopt;
  if (response.status != 200) client_->Fail("HEAD " + client_->Describe(request.key), response);
  return ObjectInfo{key, std::strtoull(response.Header("content-length").c_str(), nullptr, 10)};
}

std::vector<ObjectInfo> S3ObjectStore::List(const std::string& prefix) {
  internal::ValidatePrefix(Uri(), prefix);
  const std::string root = prefix_.empty() ? "" : prefix_ + "/";
  std::vector<ObjectInfo> out;
  std::string token;
  for (;;) {
    S3Request request;
    request.query = {{"list-type", "2"}, {"prefix", root + prefix}};
    if (!token.empty()) request.query.push_back({"continuation-token", token});
    S3Response response = client_->Execute(request);
    if (response.status != 200)
      client_->Fail("ListObjectsV2 " + client_->Describe(root + prefix), response);
    for (const auto& contents : xml::Elements(response.body, "Contents")) {
      std::string full = xml::First(contents, "Key").value_or("");
      if (full.compare(0, root.size(), root) != 0) continue;
      uint64_t size =
          std::strtoull(xml::First(contents, "Size").value_or("0").c_str(), nullptr, 10);
      out.push_back({full.substr(root.size()), size});
    }
    bool truncated = xml::First(response.body, "IsTruncated").value_or("false") == "true";
    token = xml::First(response.body, "NextContinuationToken").value_or("");
    COHORT_DEBUG(kCheckpoint, "S3 list of {}: {} keys so far{}", client_->Describe(root + prefix),
                 out.size(), truncated ? ", more to come" : "");
    if (!truncated) break;
    if (token.empty())
      throw Internal(
          fmt::format("S3 endpoint {} sent a truncated listing of {} without a "
                      "NextContinuationToken",
                      client_->endpoint(), Uri()));
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return out;
}

void S3ObjectStore::Delete(const std::string& key) {
  S3Request request;
  request.method = "DELETE";
  request.key = FullKey(key);
  S3Response response = client_->Execute(request);
  if (response.status == 204 || response.status == 200) return;
  if (response.status == 404 && response.ErrorCode() != "NoSuchBucket") return;
  client_->Fail("DELETE " + client_->Describe(request.key), response);
}

std::unique_ptr<S3ObjectStore> OpenS3ObjectStore(const std::string& uri, const S3Options& options) {
  if (uri.rfind("s3://", 0) != 0)
    throw InvalidArgument(fmt::format("'{}' is not an s3://bucket/prefix URI", uri));
  std::string rest = uri.substr(5);
  size_t slash = rest.find('/');
  std::string bucket = rest.substr(0, slash);
  std::string prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  bool bucket_ok =
      !bucket.empty() && bucket.size() <= 255 &&
      std::all_of(bucket.begin(), bucket.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
      });
  if (!bucket_ok)
    throw InvalidArgument(fmt::format(
        "'{}' has no valid bucket name; use s3://bucket/prefix (bucket: letters, digits, '.', "
        "'-')",
        uri));
  if (!prefix.empty()) internal::ValidateKey(uri, prefix);
  if (options.access_key_id.empty() || options.secret_access_key.empty())
    throw Unauthenticated(fmt::format(
        "no S3 credentials for {}: set COHORT_S3_ACCESS_KEY_ID and COHORT_S3_SECRET_ACCESS_KEY "
        "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        uri));
  return std::make_unique<S3ObjectStore>(bucket, prefix, options);
}

}  // namespace cohort::checkpoint
