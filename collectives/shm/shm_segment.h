// ShmSegment: the POSIX shared-memory segment that the ranks of one host share, and the steps
// the shared-memory collectives (shm_collectives.h) synchronize on.
//
// The segment holds one control block per rank and two sets of size + 1 slots of slot_bytes
// (one slot per rank, then one shared "result" slot). An operation is cut into pieces; piece g
// uses set g % 2, so a fast rank can fill piece g + 1 while a slow one still reads piece g.
// Within a piece, ranks meet at steps (Sync): each rank's step counter is a 32-bit futex word;
// a waiting rank spins (yielding its core when the ranks outnumber the cores), then sleeps on the
// counter with futex(2). A rank whose process has exited is named within ~50 ms (PeerFailure),
// one that does not arrive before the operation's deadline is named by a Timeout.
//
// The reuse rule every operation follows: each piece has at least one Sync, a piece's slots of set
// s are written only before its first Sync or after it, and read only between its first Sync and
// the first Sync of the next piece. Then writing set s for piece g + 2 (after the Syncs of piece
// g + 1) never overwrites what a slower rank still reads of piece g. The call descriptor follows
// the same rule: it is published per set, before the first Sync of an operation's first piece,
// and checked against every rank's right after it.
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

// What an operation is, as every rank must agree: op type, count, dtype, and the reduce op or the
// root.
struct ShmCall {
  OpType type = OpType::kAllReduce;
  uint64_t count = 0;
  DType dtype = DType::kFloat32;
  uint32_t arg = 0;  // ReduceOp for reductions, the root for broadcast
};

class ShmSegment {
 public:
  using Millis = std::chrono::milliseconds;

  // Collective over store: rank 0 creates a segment and publishes its name under scope, every
  // rank maps it and reports whether it could. Returns the same on every rank: a segment when
  // all ranks mapped it (they share a host), else nullptr and why in *why_not (ranks on other
  // hosts, COHORT_SHM=0 on any rank, /dev/shm full). The name is unlinked once every rank has
  // mapped it, so nothing is left behind when processes die.
  static std::unique_ptr<ShmSegment> Create(Store& store, const std::string& scope, int rank,
                                            int size, Millis timeout, std::string* why_not);
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  size_t slot_bytes() const { return slot_bytes_; }

  // Starts an operation: its deadline, and its call published for CheckSameCall.
  void Begin(const ShmCall& call, Millis timeout);
  // Throws InvalidArgument on every rank, naming both calls, if any rank's call differs. Right
  // after the first Sync of an operation's first piece.
  void CheckSameCall() const;

  // The set of the piece this rank is in, and its slots; index size() is the result slot.
  int set() const { return static_cast<int>(piece_ & 1); }
  char* Slot(int index) const;
  char* Result() const { return Slot(size_); }
  // Publishes this rank's arrival at the next step, then waits until every rank has arrived.
  // what says what this rank waits for, for the error that names a dead or late peer.
  void Sync(const char* what);
  // The piece is done on this rank: the next one uses the other set.
  void EndPiece() { ++piece_; }

 private:
  struct Mapping;
  ShmSegment(int rank, int size, std::unique_ptr<Mapping> mapping);

  void WaitFor(int peer, uint32_t step, const char* what);
  bool SpinFor(int peer, uint32_t step) const;
  // Throws PeerFailure if peer's process is gone, Timeout once the deadline has passed.
  void CheckPeer(int peer, const char* what) const;

  const int rank_;
  const int size_;
  std::unique_ptr<Mapping> map_;
  size_t slot_bytes_ = 0;
  bool oversubscribed_ = false;  // more ranks than cores: yield while spinning
  uint64_t piece_ = 0;           // pieces done so far, over every operation: in step everywhere
  uint32_t step_ = 0;            // Syncs done so far
  std::chrono::steady_clock::time_point deadline_;  // of the operation running now
};

}  // namespace cohort::collectives
