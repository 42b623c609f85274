// Writer of one S3 object. Up to part_size bytes go up in a single PUT at Commit(); past that the
// writer starts a multipart upload and hands each full part to a few upload threads (each request
// on its own connection) while the caller keeps writing; Commit() sends the last part and
// completes the upload. On any failure, and when destroyed uncommitted, it aborts the upload so
// no parts linger in the bucket. Memory: at most parallel_parts + 1 parts.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/store/object_store.h"

namespace cohort::checkpoint {

class S3Client;

class S3Writer : public ObjectWriter {
 public:
  // key: the full object key in the bucket.
  S3Writer(std::shared_ptr<S3Client> client, std::string key);
  ~S3Writer() override;

  void Write(const void* data, size_t size) override;
  void Commit() override;

 private:
  struct Part {
    int number;
    std::string data;
  };

  void StartUpload();
  void Submit(std::string data);  // blocks while parallel_parts parts are queued or in flight
  void UploadLoop();
  void StopWorkers();
  void Abort() noexcept;
  void Complete();
  void CheckUsable() const;
  [[noreturn]] void FailAndAbort(std::exception_ptr error);

  std::shared_ptr<S3Client> client_;
  std::string key_;
  std::string current_;  // the part being filled
  std::string upload_id_;
  int next_part_ = 1;
  bool committed_ = false;
  bool failed_ = false;

  // Shared with the upload threads.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Part> queue_;
  int in_flight_ = 0;
  bool stop_ = false;
  std::vector<std::string> etags_;  // by part number - 1
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
};

}  // namespace cohort::checkpoint
