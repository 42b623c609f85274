#include "checkpoint/host_buffer_pool.h"

#include <fmt/format.h>

#include <cstdlib>

#include "common/error.h"

namespace cohort::checkpoint {

struct HostBufferPool::State {
  std::mutex mu;
  bool open = true;
  std::map<size_t, std::vector<void*>> idle;  // by rounded size
  size_t idle_bytes = 0;

  ~State() {
    for (auto& [size, blocks] : idle) {
      for (void* p : blocks) std::free(p);
    }
  }
};

namespace {

size_t Rounded(size_t bytes) { return (bytes + 63) / 64 * 64 + 64; }

}  // namespace

HostBufferPool::HostBufferPool() : state_(std::make_shared<State>()) {}

HostBufferPool::~HostBufferPool() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->open = false;  // buffers still out are freed, not returned
}

HostTensor HostBufferPool::Allocate(std::string name, DType dtype, std::vector<int64_t> shape) {
  size_t bytes = collectives::ElementSize(dtype);
  for (int64_t d : shape) bytes *= static_cast<size_t>(d < 0 ? 0 : d);
  const size_t size = Rounded(bytes);
  void* block = nullptr;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->idle.find(size);
    if (it != state_->idle.end() && !it->second.empty()) {
      block = it->second.back();
      it->second.pop_back();
      state_->idle_bytes -= size;
    }
  }
  if (block == nullptr) block = std::aligned_alloc(64, size);
  if (block == nullptr) {
    throw Unavailable(fmt::format("out of host memory allocating {} bytes for '{}'", size, name));
  }
  std::shared_ptr<State> state = state_;
  std::shared_ptr<void> owned(block, [state, size](void* p) {
    std::lock_guard<std::mutex> lock(state->mu);
    if (!state->open) {
      std::free(p);
      return;
    }
    state->idle[size].push_back(p);
    state->idle_bytes += size;
  });
  return HostTensor::Adopt(std::move(name), dtype, std::move(shape), std::move(owned));
}

size_t HostBufferPool::IdleBytes() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->idle_bytes;
}

void HostBufferPool::Trim() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto& [size, blocks] : state_->idle) {
    for (void* p : blocks) std::free(p);
  }
  state_->idle.clear();
  state_->idle_bytes = 0;
}

}  // namespace cohort::checkpoint
