// ShmAllReduce: all-reduce between ranks that share one host, through a POSIX shared memory
// segment instead of the network transport. Over loopback TCP every byte is copied through the
// kernel twice per hop; here each rank copies its piece into the segment once, reduces its
// 1/size share of it from every rank's copy, and copies the reduced piece back: about three
// memcpy's worth of memory traffic, no system calls on the data path.
//
// The buffer is processed in pieces of slot_bytes, two pieces in flight (double-buffered
// sets), so one rank copies piece g+1 in while another still reads piece g out. Ranks step
// through three phases per piece (posted, reduced, read) on a 32-bit counter each; a waiting rank
// spins briefly, then sleeps on the counter with futex(2), so a rank that arrives early gives its
// core to the ranks still computing (two cores often run several ranks). A rank whose process
// has exited is named within ~50 ms (PeerFailure), one that does not arrive before the timeout
// is named by the Timeout; the caller's communicator then breaks, as on any backend.
//
// Every rank ends with bitwise the same result (the reduced bytes are copied, never recomputed),
// summed in rank order. Operations must be called in the same order on every rank, as every
// collective.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "collectives/op.h"
#include "collectives/tensor_view.h"

namespace cohort::collectives {

class Store;

class ShmAllReduce {
 public:
  using Millis = std::chrono::milliseconds;

  // Collective over store: rank 0 creates a segment and publishes its name under scope, every
  // rank maps it and reports whether it could. Returns the same on every rank: an instance when
  // all ranks mapped the segment (they share a host), else nullptr and why in *why_not (ranks on
  // other hosts, COHORT_SHM=0 on any rank, /dev/shm full). The segment's name is unlinked once
  // every rank has mapped it, so nothing is left behind when processes die.
  static std::unique_ptr<ShmAllReduce> Create(Store& store, const std::string& scope, int rank,
                                              int size, Millis timeout, std::string* why_not);
  ~ShmAllReduce();
  ShmAllReduce(const ShmAllReduce&) = delete;
  ShmAllReduce& operator=(const ShmAllReduce&) = delete;

  // out = op over every rank's in (count elements of dtype); in may equal out. Every call,
  // zero-length ones too, meets the other ranks: one called with another count, dtype or op
  // fails on every rank with InvalidArgument naming both calls, instead of mixing buffers.
  void Run(const void* in, void* out, size_t count, DType dtype, ReduceOp op, Millis timeout);

  size_t slot_bytes() const { return slot_bytes_; }

 private:
  struct Segment;
  ShmAllReduce(int rank, int size, std::unique_ptr<Segment> segment);

  // Piece g of an operation: elements [first, first + n) of the buffer.
  // The first piece of an operation also checks that every rank called the same one.
  void RunPiece(const char* in, char* out, size_t first, size_t n, DType dtype, ReduceOp op,
                bool first_piece);
  void CheckSameCall() const;
  // Publishes this rank's phase counter and wakes its waiters.
  void Mark(uint32_t phase);
  // Waits until every rank's phase counter has reached phase.
  void WaitAll(uint32_t phase);
  void WaitFor(int peer, uint32_t phase);
  // Throws PeerFailure if peer's process is gone, Timeout once the deadline has passed.
  void CheckPeer(int peer, uint32_t phase) const;

  char* Slot(int set, int rank) const;
  char* Result(int set) const;

  const int rank_;
  const int size_;
  std::unique_ptr<Segment> segment_;
  size_t slot_bytes_ = 0;
  uint64_t piece_ = 0;  // pieces done so far, over every operation: in step on every rank

  std::chrono::steady_clock::time_point deadline_;  // of the operation running now
};

}  // namespace cohort::collectives
