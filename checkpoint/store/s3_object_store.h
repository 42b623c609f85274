// s3://bucket/prefix: objects on an S3-compatible server (AWS S3, MinIO, Ceph RGW, moto), through
// libcurl with SigV4 signing and path-style URLs. Objects up to S3Options::part_size go up in one
// PUT; larger ones as multipart uploads with parts in parallel (s3_multipart.h). Every request
// is retried with backoff on 5xx, 429, connection errors and timeouts (s3_client.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "checkpoint/store/object_store.h"
#include "checkpoint/store/s3_options.h"

namespace cohort::checkpoint {

class S3Client;

class S3ObjectStore : public ObjectStore {
 public:
  // prefix: "" or "a/b" (no leading or trailing '/'); keys live under it.
  S3ObjectStore(std::string bucket, std::string prefix, const S3Options& options);
  ~S3ObjectStore() override;

  std::string Uri() const override;
  std::unique_ptr<ObjectWriter> NewWriter(const std::string& key) override;
  std::optional<std::string> Get(const std::string& key) override;
  std::string GetRange(const std::string& key, uint64_t offset, uint64_t length) override;
  std::optional<ObjectInfo> Head(const std::string& key) override;
  std::vector<ObjectInfo> List(const std::string& prefix) override;
  void Delete(const std::string& key) override;

  // Requests this store retried so far (all threads), for tests and metrics.
  uint64_t RetryCount() const;
  const S3Options& options() const;

 private:
  std::string FullKey(const std::string& key) const;  // validates the key

  std::string bucket_;
  std::string prefix_;
  std::shared_ptr<S3Client> client_;
};

// Opens s3://bucket[/prefix]. Throws InvalidArgument for a malformed URI or bucket name and
// Unauthenticated when no credentials are configured. Makes no request yet.
std::unique_ptr<S3ObjectStore> OpenS3ObjectStore(const std::string& uri, const S3Options& options);

}  // namespace cohort::checkpoint
