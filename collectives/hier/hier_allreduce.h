// HierAllReduce: the all-reduce of a world whose ranks sit on several hosts, several on at least
// one (host_groups.h says which share a host).
//
// Algorithm: (1) the ranks of each host all-reduce through shared memory (ShmCollectives, in
// local rank order); (2) each host's leader (its lowest rank) all-reduces that partial result
// with the other leaders over a communicator of the leaders only (Gloo TCP, its own scope and
// pairs; made by the caller's factory); (3) each leader broadcasts the result to its host
// through shared memory. A host of one rank skips (1) and (3). kAvg sums in (1) and (2) and the
// leader divides by the world size before (3). Buffers over kPieceBytes go piece by piece, and
// the leaders' step (2) of one piece overlaps step (1) of the next.
// Traffic between hosts: one all-reduce of the buffer among H leaders (2(H-1)/H of it per leader
// each way, Gloo's ring) instead of the world's ring, in which every rank sends 2(N-1)/N of it.
// Bits: every rank of a host copies its leader's result, and the leaders' ring leaves one result
// on every leader (each chunk is reduced once and copied), so every rank ends with the same bits.
// Failures: a dead local peer is named by its host's ranks within ~50 ms (PeerFailure, as
// ShmCollectives, with the local ranks translated to world ranks); its leader then fails and
// the other leaders see their TCP pairs fail (PeerFailure) or time out, and their hosts see the
// leader exit or time out: every rank fails within the operation's timeout, and the caller's
// health monitor names the ranks that stopped responding.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace cohort::collectives {

class ShmCollectives;

class HierAllReduce {
 public:
  using Millis = std::chrono::milliseconds;
  // Buffers are cut into pieces of this many bytes, whose steps overlap (see AllReduce).
  static constexpr size_t kPieceBytes = size_t{8} << 20;
  // Makes the leaders' communicator from its config (rank, size, name, group, global ranks).
  using LeaderFactory = std::function<std::unique_ptr<Communicator>(const CommConfig&)>;

  // Collective over config.store (every rank of config calls it with the same scope): an instance
  // on every rank when the world spans >= 2 hosts and one has >= 2 ranks and COHORT_HIER is not
  // 0 on any rank, else nullptr on every rank and why in *why_not.
  static std::unique_ptr<HierAllReduce> Create(const CommConfig& config, const std::string& scope,
                                               const LeaderFactory& make_leaders,
                                               std::string* why_not);
  ~HierAllReduce();
  HierAllReduce(const HierAllReduce&) = delete;
  HierAllReduce& operator=(const HierAllReduce&) = delete;

  // out = op over every rank's in (count elements of dtype); in may equal out. Every call, a
  // zero-length one too, meets the other ranks of this host.
  void AllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op, Millis timeout);

  int hosts() const { return hosts_; }
  bool leader() const { return leaders_ != nullptr; }
  // "4 ranks on 2 hosts (2,2)": for logs.
  const std::string& Describe() const { return describe_; }

 private:
  HierAllReduce() = default;
  // Runs a shared-memory step, rethrowing its error with the host's local ranks as world ranks.
  template <typename F>
  void Local(const char* what, F&& step);

  int size_ = 1;
  int hosts_ = 1;
  std::vector<int> local_ranks_;           // world ranks of this host's ranks, local rank order
  std::unique_ptr<ShmCollectives> shm_;    // null when this host has one rank
  std::unique_ptr<Communicator> leaders_;  // on leaders only
  std::string describe_;
};

}  // namespace cohort::collectives
