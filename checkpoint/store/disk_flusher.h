// DiskFlusher: makes a file's bytes durable while it is still being written, so that the
// writer's final fsync has little left to do.
//
// A write reaches the disk in two steps: writeback moves dirty pages to the device
// (sync_file_range starts it, FileWriter does that every 16 MiB), and a cache flush makes the
// device persist what it holds (only fsync/fdatasync send one). On a virtual disk whose host
// caches writes, and on drives with a volatile cache, the flush is where the time goes: done
// only at the end, a save costs the copy into the page cache plus the whole flush. This thread
// calls fdatasync every `every` bytes while the writer goes on copying, so the two overlap and a
// save costs about the larger of them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace cohort::checkpoint {

class DiskFlusher {
 public:
  // fd stays owned by the caller and open until Stop() returns. `path` names it in errors.
  DiskFlusher(int fd, std::string path, uint64_t every);
  ~DiskFlusher();  // Stop()s, dropping any error
  DiskFlusher(const DiskFlusher&) = delete;
  DiskFlusher& operator=(const DiskFlusher&) = delete;

  // The writer has written `bytes` in all (never decreasing).
  void Written(uint64_t bytes);
  // Waits for the thread. Throws the error of a failed fdatasync: the kernel reports a writeback
  // error to one fsync per open file only, so the writer's final fsync would not see it again.
  void Stop();

 private:
  void Run();

  const int fd_;
  const std::string path_;
  const uint64_t every_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t written_ = 0;   // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  int error_ = 0;          // errno of a failed fdatasync, guarded by mu_
  std::thread thread_;
};

}  // namespace cohort::checkpoint
