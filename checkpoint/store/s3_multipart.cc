#include "checkpoint/store/s3_multipart.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "checkpoint/store/s3_client.h"
#include "checkpoint/store/s3_xml.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"

namespace cohort::checkpoint {
namespace {

std::string Unquote(std::string etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"')
    etag = etag.substr(1, etag.size() - 2);
  return etag;
}

// The ETag S3 gives a completed multipart object: MD5 of the parts' binary MD5s, "-", count.
// Lets a retried Complete that finds its upload gone tell "already completed" from "lost".
std::string MultipartEtag(const std::vector<std::string>& part_etags) {
  std::string binary;
  for (const auto& e : part_etags) {
    std::string hex = Unquote(e);
    if (hex.size() != 32) return "";  // not an MD5 (e.g. SSE-KMS): cannot predict
    for (size_t i = 0; i < 32; i += 2)
      binary.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(binary.data(), binary.size(), digest, &len, EVP_md5(), nullptr) != 1) return "";
  return fmt::format("{}-{}", Hex(digest, len), part_etags.size());
}

}  // namespace

S3Writer::S3Writer(std::shared_ptr<S3Client> client, std::string key)
    : client_(std::move(client)), key_(std::move(key)) {}

S3Writer::~S3Writer() {
  if (!committed_) Abort();
  StopWorkers();
}

void S3Writer::CheckUsable() const {
  if (committed_ || failed_)
    throw InvalidArgument(fmt::format("writer of {} used after {}", client_->Describe(key_),
                                      committed_ ? "Commit()" : "a failure"));
}

void S3Writer::Write(const void* data, size_t size) {
  CheckUsable();
  const uint64_t part_size = client_->options().part_size;
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // A full part is sent only once more bytes arrive: the last part is sent by Commit(), and
    // an object of exactly part_size bytes stays a single PUT.
    if (current_.size() == part_size) {
      Submit(std::move(current_));
      current_ = std::string();
      current_.reserve(part_size);
    }
    size_t take = std::min<uint64_t>(size, part_size - current_.size());
    current_.append(p, take);
    p += take;
    size -= take;
  }
}

void S3Writer::StartUpload() {
  S3Request request;
  request.method = "POST";
  request.key = key_;
  request.query = {{"uploads", ""}};
  S3Response response = client_->Execute(request);
  if (response.status != 200)
    client_->Fail("CreateMultipartUpload " + client_->Describe(key_), response);
  upload_id_ = xml::First(response.body, "UploadId").value_or("");
  if (upload_id_.empty())
    throw Internal(
        fmt::format("S3 endpoint {} answered CreateMultipartUpload of {} without an "
                    "UploadId: {}",
                    client_->endpoint(), client_->Describe(key_), response.body.substr(0, 200)));
  COHORT_DEBUG(kCheckpoint, "S3 multipart upload of {} started: {}", client_->Describe(key_),
               upload_id_);
  for (int i = 0; i < client_->options().parallel_parts; ++i)
    workers_.emplace_back([this] { UploadLoop(); });
}

void S3Writer::Submit(std::string data) {
  if (upload_id_.empty()) {
    try {
      StartUpload();
    } catch (...) {
      FailAndAbort(std::current_exception());
    }
  }
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    const size_t limit = static_cast<size_t>(client_->options().parallel_parts);
    cv_.wait(lock, [&] { return error_ || queue_.size() + in_flight_ < limit; });
    error = error_;
    if (!error) queue_.push_back({next_part_++, std::move(data)});
  }
  if (error) FailAndAbort(error);
  cv_.notify_all();
}

void S3Writer::UploadLoop() {
  for (;;) {
    Part part;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopped
      part = std::move(queue_.front());
      queue_.pop_front();
      ++in_flight_;
    }
    try {
      S3Request request;
      request.method = "PUT";
      request.key = key_;
      request.query = {{"partNumber", std::to_string(part.number)}, {"uploadId", upload_id_}};
      request.body = part.data.data();
      request.body_size = part.data.size();
      S3Response response = client_->Execute(request);
      if (response.status != 200)
        client_->Fail(fmt::format("UploadPart {} of {}", part.number, client_->Describe(key_)),
                      response);
      std::string etag = response.Header("etag");
      if (etag.empty())
        throw Internal(fmt::format("S3 endpoint {} answered UploadPart {} of {} without an ETag",
                                   client_->endpoint(), part.number, client_->Describe(key_)));
      std::lock_guard<std::mutex> lock(mu_);
      if (etags_.size() < static_cast<size_t>(part.number)) etags_.resize(part.number);
      etags_[part.number - 1] = etag;
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
      queue_.clear();  // the upload is lost; do not send more
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      --in_flight_;
    }
    cv_.notify_all();
  }
}

void S3Writer::StopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void S3Writer::Abort() noexcept {
  StopWorkers();
  if (upload_id_.empty()) return;
  try {
    S3Request request;
    request.method = "DELETE";
    request.key = key_;
    request.query = {{"uploadId", upload_id_}};
    S3Response response = client_->Execute(request);
    if (response.status != 204 && response.status != 200 && response.status != 404)
      client_->Fail("AbortMultipartUpload " + client_->Describe(key_), response);
    COHORT_DEBUG(kCheckpoint, "S3 multipart upload of {} aborted", client_->Describe(key_));
  } catch (const std::exception& e) {
    COHORT_WARN(kCheckpoint,
                "could not abort the multipart upload {} of {}; its parts stay in the bucket "
                "until a lifecycle rule removes them: {}",
                upload_id_, client_->Describe(key_), e.what());
  }
  upload_id_.clear();
}

void S3Writer::FailAndAbort(std::exception_ptr error) {
  failed_ = true;
  Abort();
  std::rethrow_exception(error);
}

void S3Writer::Commit() {
  CheckUsable();
  if (upload_id_.empty()) {
    S3Request request;
    request.method = "PUT";
    request.key = key_;
    request.body = current_.data();
    request.body_size = current_.size();
    S3Response response;
    try {
      response = client_->Execute(request);
    } catch (...) {
      failed_ = true;
      throw;
    }
    if (response.status != 200) {
      failed_ = true;
      client_->Fail("PUT " + client_->Describe(key_), response);
    }
    committed_ = true;
    current_ = std::string();
    return;
  }
  Submit(std::move(current_));
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return error_ || (queue_.empty() && in_flight_ == 0); });
    error = error_;
  }
  if (error) FailAndAbort(error);
  StopWorkers();
  try {
    Complete();
  } catch (...) {
    FailAndAbort(std::current_exception());
  }
  committed_ = true;
  upload_id_.clear();
}

void S3Writer::Complete() {
  std::string body = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < etags_.size(); ++i)
    body += fmt::format("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", i + 1,
                        xml::Escape(etags_[i]));
  body += "</CompleteMultipartUpload>";
  S3Request request;
  request.method = "POST";
  request.key = key_;
  request.query = {{"uploadId", upload_id_}};
  request.body = body.data();
  request.body_size = body.size();
  const std::string what = "CompleteMultipartUpload " + client_->Describe(key_);
  for (int attempt = 1;; ++attempt) {
    S3Response response = client_->Execute(request);
    // S3 may answer 200 and still fail: the error is then in the body.
    if (response.status == 200 && response.body.find("<Error>") == std::string::npos) return;
    if (response.status == 404 && response.ErrorCode() == "NoSuchUpload") {
      // An earlier try may have completed it and only its answer was lost.
      S3Request head;
      head.method = "HEAD";
      head.key = key_;
      S3Response h = client_->Execute(head);
      std::string expected = MultipartEtag(etags_);
      if (h.status == 200 && !expected.empty() && Unquote(h.Header("etag")) == expected) return;
    }
    std::string code = response.ErrorCode();
    bool transient = response.status == 200 && (code == "InternalError" || code == "SlowDown" ||
                                                code == "ServiceUnavailable");
    if (!transient || attempt >= client_->options().max_attempts) {
      if (response.status == 200) response.status = 500;  // report it as the failure it is
      client_->Fail(what, response);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
  }
}

}  // namespace cohort::checkpoint
