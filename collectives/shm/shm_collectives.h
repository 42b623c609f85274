// ShmCollectives: all-reduce, broadcast, all-gather and reduce-scatter between ranks that share
// one host, through a POSIX shared memory segment (ShmSegment) instead of the network
// transport. Over loopback TCP every byte is copied through the kernel twice per hop; here the
// data moves with memcpy and the reduction kernels, and no system call is on the data path.
//
// All-reduce, small buffers (up to kSmallAllReduceBytes): each rank copies its buffer into its
// slot, the ranks meet once, and every rank reduces every slot, in rank order, into its own out.
// Large buffers, piece by piece: each rank copies into its slot the parts of its piece that the
// other ranks reduce, the ranks meet, each reduces its 1/size share from the slots (its own part
// straight from in) into the shared result, they meet again, and each copies the result out.
// The pieces are small enough to stay in cache, and two are in flight (ShmSegment's sets).
//
// Every rank ends with bitwise the same result: reductions run in rank order, the same kernels on
// the same bytes (small all-reduces), or the reduced bytes are copied (large all-reduces,
// reduce-scatter). Operations must be called in the same order on every rank, as every
// collective; every call, zero-length ones too, meets the other ranks, and one called with
// another op, count, dtype, reduce op or root fails on every rank with InvalidArgument naming
// both calls, instead of mixing buffers. A dead peer is named within ~50 ms (PeerFailure), a
// late one at the timeout (Timeout); the caller's communicator then breaks, as on any backend.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "collectives/op.h"
#include "collectives/tensor_view.h"

namespace cohort::collectives {

class Store;
class ShmSegment;

class ShmCollectives {
 public:
  using Millis = std::chrono::milliseconds;
  // At most this many bytes go through the one-step all-reduce.
  static constexpr size_t kSmallAllReduceBytes = size_t{16} << 10;

  // Collective over store (see ShmSegment::Create): an instance on every rank when all ranks
  // share this host, else nullptr on every rank and why in *why_not.
  static std::unique_ptr<ShmCollectives> Create(Store& store, const std::string& scope, int rank,
                                                int size, Millis timeout, std::string* why_not);
  ~ShmCollectives();
  ShmCollectives(const ShmCollectives&) = delete;
  ShmCollectives& operator=(const ShmCollectives&) = delete;

  // out = op over every rank's in (count elements of dtype); in may equal out.
  void AllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op, Millis timeout);
  // data (count elements) = root's data on every rank.
  void Broadcast(void* data, size_t count, DType dtype, int root, Millis timeout);
  // out (size * count elements) = every rank's in (count elements) in rank order; in may be
  // this rank's slice of out.
  void AllGather(const void* in, void* out, size_t count, DType dtype, Millis timeout);
  // out (count elements) = op over every rank's slice rank of in (size * count elements); out
  // may be this rank's slice of in.
  void ReduceScatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                     Millis timeout);

  int rank() const;
  int size() const;
  // The piece size: operations longer than this are cut into pieces.
  size_t slot_bytes() const;

 private:
  explicit ShmCollectives(std::unique_ptr<ShmSegment> segment);

  std::unique_ptr<ShmSegment> seg_;
};

}  // namespace cohort::collectives
