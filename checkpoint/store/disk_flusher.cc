#include "checkpoint/store/disk_flusher.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/check.h"
#include "common/error.h"

namespace cohort::checkpoint {

DiskFlusher::DiskFlusher(int fd, std::string path, uint64_t every)
    : fd_(fd), path_(std::move(path)), every_(every), thread_([this] { Run(); }) {}

DiskFlusher::~DiskFlusher() {
  try {
    Stop();
  } catch (...) {  // an aborted write: its error no longer matters
  }
}

void DiskFlusher::Written(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    written_ = bytes;
  }
  cv_.notify_one();
}

void DiskFlusher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (error_ != 0) {
    const int err = error_;
    error_ = 0;
    ThrowError(internal::KindFromErrno(err),
               fmt::format("{}: fdatasync() failed while writing: {}", path_, std::strerror(err)));
  }
}

void DiskFlusher::Run() {
  uint64_t flushed = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || written_ - flushed >= every_; });
    if (stopping_ || error_ != 0) return;  // the writer's fsync does the rest
    const uint64_t target = written_;
    lock.unlock();
    const int rc = ::fdatasync(fd_);
    const int err = errno;
    lock.lock();
    if (rc != 0) error_ = err;
    flushed = target;
  }
}

}  // namespace cohort::checkpoint
