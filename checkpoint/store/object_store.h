// ObjectStore: where snapshots live. Keys are '/'-separated paths relative to the store's root
// URI. Implementations:
//   file:///abs/dir        Put writes a temp name, fsyncs it, renames it, fsyncs the directory
//   s3://bucket/prefix     libcurl with CURLOPT_AWS_SIGV4, path-style; endpoint, region and
//                          credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
//                          AWS_SECRET_ACCESS_KEY or COHORT_S3_*; multipart above 8 MiB with
//                          parts in parallel; retries with backoff and jitter on 5xx, 429 and
//                          timeouts; unfinished multipart uploads are aborted
//   memory://name          a process-wide map, for tests
// and FaultyObjectStore (checkpoint/store/faulty_store.h) wraps any of them for fault tests.
// No libtorch here. Errors are cohort errors: Unavailable (cannot reach), Unauthenticated
// (credentials refused), InvalidArgument (bad URI, missing bucket), DataLoss (short read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cohort::checkpoint {

struct ObjectInfo {
  std::string key;  // relative to the store's root
  uint64_t size = 0;
};

// Streams one object. Write() may be called many times; Commit() makes the object visible as a
// whole (atomically: readers see the previous object or the complete new one, never a part).
// Destroying a writer that was not committed aborts it and leaves nothing behind.
class ObjectWriter {
 public:
  virtual ~ObjectWriter() = default;
  virtual void Write(const void* data, size_t size) = 0;
  virtual void Commit() = 0;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // The root URI, for messages ("s3://bucket/prefix", "file:///ckpt").
  virtual std::string Uri() const = 0;

  virtual std::unique_ptr<ObjectWriter> NewWriter(const std::string& key) = 0;
  // Writes a whole object atomically (NewWriter + Write + Commit).
  virtual void Put(const std::string& key, const void* data, size_t size);
  void Put(const std::string& key, const std::string& data) { Put(key, data.data(), data.size()); }

  // The whole object, or nullopt when it does not exist.
  virtual std::optional<std::string> Get(const std::string& key) = 0;
  // Bytes [offset, offset + length) of an object; fewer only at its end. Throws
  // InvalidArgument naming the key when it does not exist.
  virtual std::string GetRange(const std::string& key, uint64_t offset, uint64_t length) = 0;
  virtual std::optional<ObjectInfo> Head(const std::string& key) = 0;
  // Every object whose key starts with prefix, sorted by key.
  virtual std::vector<ObjectInfo> List(const std::string& prefix) = 0;
  // Deletes an object; deleting a missing one is not an error.
  virtual void Delete(const std::string& key) = 0;
};

// Opens file://, s3:// or memory:// URIs; a plain path counts as file://. Throws
// InvalidArgument with the accepted forms for anything else.
std::unique_ptr<ObjectStore> OpenObjectStore(const std::string& uri);

}  // namespace cohort::checkpoint
