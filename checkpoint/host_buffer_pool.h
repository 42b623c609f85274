// Reusable host buffers for phase one of a save (the copy out of the model). Fresh memory costs
// page faults on first touch (on some VMs ~10 s per GiB, 50x the copy itself); a pool hands the
// same buffers out again once the previous save has written them, so that from the second save
// on, phase one is a plain memcpy into warm memory.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "checkpoint/shard.h"

namespace cohort::checkpoint {

class HostBufferPool {
 public:
  HostBufferPool();
  ~HostBufferPool();
  HostBufferPool(const HostBufferPool&) = delete;
  HostBufferPool& operator=(const HostBufferPool&) = delete;

  // A writable tensor whose buffer returns to this pool when its last copy is destroyed (e.g.
  // when the AsyncSaver finished writing it). Buffers are reused by exact byte size, which fits
  // a training state whose shapes repeat from save to save. Safe from any thread; the buffers
  // may outlive the pool (they are then freed).
  HostTensor Allocate(std::string name, DType dtype, std::vector<int64_t> shape);

  // Bytes held idle in the pool.
  size_t IdleBytes() const;
  // Frees every idle buffer.
  void Trim();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace cohort::checkpoint
