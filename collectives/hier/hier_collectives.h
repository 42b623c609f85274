// HierCollectives: all-reduce, broadcast, all-gather and reduce-scatter of a world whose ranks
// sit on several hosts, several on at least one (host_groups.h says which share a host): shared
// memory inside each host, one leader per host (its lowest rank) over a communicator of the
// leaders only.
//
// All-reduce: (1) the ranks of each host all-reduce through shared memory (ShmCollectives, in
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
// Rails, for buffers of kRailMinBytes and more when every host has the same L ranks (as NCCL's
// rings do per NIC): (1) each host reduce-scatters through shared memory, local rank l keeping
// slice l; (2) rail l, the ranks of local rank l on every host, all-reduces slice l over TCP,
// every rail at once; (3) each host all-gathers the slices. The same bytes cross between hosts
// as with one leader, spread over L ranks instead of one, and each rank reduces 1/L of the
// buffer in shared memory instead of all of it, and copies it once instead of twice (no
// broadcast). Same bits everywhere: each slice is reduced on one rank per host and by one rail
// ring, then copied. The last count % L elements take the leaders' path.
// Failures: a dead local peer is named by its host's ranks within ~50 ms (PeerFailure, as
// ShmCollectives, with the local ranks translated to world ranks); its leader then fails and
// the other leaders see their TCP pairs fail (PeerFailure) or time out, and their hosts see the
// leader exit or time out: every rank fails within the operation's timeout, and the caller's
// health monitor names the ranks that stopped responding.
//
// Broadcast: root's host copies root's buffer through shared memory (its leader
// among them), the leaders broadcast it from root's leader, every other host copies its
// leader's. All-gather: each host gathers its ranks' pieces through shared memory, the leaders
// all-gather those host blocks (padded to the largest host's), each leader puts the pieces in
// rank order and its host copies the whole result. Both only copy: every rank ends with the
// same bits. Traffic between hosts: the buffer once per leader (broadcast), the world's result
// once per leader (all-gather), instead of every rank's share of the world's TCP ring.
//
// Reduce-scatter over the rails (inputs over kReduceScatterMaxBytes, even hosts): each rank lays
// its input out in rail chunks (chunk l: the slices of the ranks of local rank l, host order),
// its host reduce-scatters the chunks through shared memory (local rank l keeps chunk l), and
// rail l reduce-scatters chunk l over TCP: every rank ends with its slice, nothing broadcast.
// Through the leaders (smaller inputs): each rank lays its input out as the leaders need it
// (host blocks: the slices of host h's ranks in local rank order, padded to the largest
// host's), its host all-reduces that through shared memory, the leaders reduce-scatter the host
// blocks (each leader ends with its host's block reduced over every host), and each leader
// broadcasts its block to its host, whose ranks take their slices. Traffic between hosts: (H-1)/H
// of the padded input per leader each way, instead of (N-1)/N of it on each of the world ring's
// links. Results are exact for exact inputs; each slice is reduced once, by one leader, so it has
// one value everywhere it goes (but its bits may differ from the all-reduce's, whose order is not
// the same).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace cohort::collectives {

class ShmCollectives;

class HierCollectives {
 public:
  using Millis = std::chrono::milliseconds;
  // Buffers of all-reduce are cut into pieces of this many bytes, whose steps overlap (see
  // AllReduce).
  static constexpr size_t kPieceBytes = size_t{8} << 20;
  // Reduce-scatters of inputs up to this many bytes go through the leaders; larger ones over the
  // rails where hosts are even, else the flat ring. Measured on 2 netns nodes x 2 ranks
  // (hier_netns_bench --ops reducescatter, 2 cores): through the leaders 5-7x faster than flat
  // from 64 B to 256 KiB, 1.15x at 1 MiB, and 0.55x at 4 MiB and beyond, where the
  // shared-memory all-reduce of the whole input on every host costs more CPU than the TCP it
  // saves; over the rails even with flat from 1 MiB to 16 MiB and 1.15x at 64 and 256 MiB.
  static constexpr size_t kReduceScatterMaxBytes = size_t{1} << 20;
  // All-gathers of results up to this many bytes go hierarchical; larger ones stay on the flat
  // ring. Measured as above (--ops allgather): hierarchical 1.5x flat at 1 MiB, even at 4 MiB,
  // 0.8x from 16 MiB, where its two full copies of the result on every rank (the leader's
  // reordering, the host's broadcast) cost more than the TCP it saves.
  static constexpr size_t kAllGatherMaxBytes = size_t{4} << 20;
  // All-reduces of this many bytes and more go over the rails (see above) where hosts are even:
  // measured as above, the leaders' path is the faster up to 2 MiB, the rails from 4 MiB.
  static constexpr size_t kRailMinBytes = size_t{4} << 20;
  // ... in pieces of this many bytes, pipelined as kPieceBytes are (the piece rounded down to a
  // multiple of L elements).
  static constexpr size_t kRailPieceBytes = size_t{2} << 20;
  // The group name of the leaders' communicator: its ranks are on different hosts by
  // construction, so it never looks for shared memory among them (GlooCommunicator).
  static constexpr const char* kLeadersGroup = "hier-leaders";
  // Makes the leaders' communicator from its config (rank, size, name, group, global ranks).
  using LeaderFactory = std::function<std::unique_ptr<Communicator>(const CommConfig&)>;

  // Collective over config.store (every rank of config calls it with the same scope): an instance
  // on every rank when the world spans >= 2 hosts and one has >= 2 ranks and COHORT_HIER is not
  // 0 on any rank, else nullptr on every rank and why in *why_not.
  static std::unique_ptr<HierCollectives> Create(const CommConfig& config, const std::string& scope,
                                                 const LeaderFactory& make_leaders,
                                                 std::string* why_not);
  ~HierCollectives();
  HierCollectives(const HierCollectives&) = delete;
  HierCollectives& operator=(const HierCollectives&) = delete;

  // out = op over every rank's in (count elements of dtype); in may equal out. Every call, a
  // zero-length one too, meets the other ranks of this host.
  void AllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op, Millis timeout);
  // Every rank's data = root's (count elements). Zero-length calls meet too.
  void Broadcast(void* data, size_t count, DType dtype, int root, Millis timeout);
  // out (size * count elements) = every rank's in, in rank order; in may be this rank's piece
  // of out. Zero-length calls meet too. Callers use it for results up to kAllGatherMaxBytes.
  void AllGather(const void* in, void* out, size_t count, DType dtype, Millis timeout);
  // out (count elements) = op over every rank's slice `rank` of in (size * count elements); out
  // may be this rank's slice of in. Zero-length calls meet too. Callers use it for inputs up to
  // kReduceScatterMaxBytes (it is correct for any size).
  void ReduceScatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                     Millis timeout);

  int hosts() const { return hosts_; }
  bool leader() const { return leaders_ != nullptr; }
  // Every host has the same rank count: large all-reduces and reduce-scatters go over the rails.
  bool rails() const { return rails_; }
  // "4 ranks on 2 hosts (2,2)": for logs.
  const std::string& Describe() const { return describe_; }

 private:
  HierCollectives() = default;
  // Runs a shared-memory step, rethrowing its error (of `op`, "all-reduce") with the host's
  // local ranks as world ranks.
  template <typename F>
  void Local(const char* op, const char* what, F&& step);

  using Clock = std::chrono::steady_clock;
  // The largest host's rank count: host blocks of all-gather and reduce-scatter are this long.
  size_t MaxLocal() const;
  // A buffer of at least bytes, kept from call to call (an 8 MiB input's pages are not faulted
  // in again on every call).
  char* Scratch(size_t bytes);
  // Sets rails_ when every host has the same rank count (>= 2) and makes this rank's rail.
  void MakeRail(const CommConfig& config, const LeaderFactory& make_rail);
  // All-reduce through one leader per host; and over the rails (count a multiple of L).
  void LeaderAllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                       Clock::time_point deadline);
  void RailAllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                     Clock::time_point deadline);
  // Reduce-scatter through one leader per host; and over the rails.
  void LeaderReduceScatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                           Clock::time_point deadline);
  void RailReduceScatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                         Clock::time_point deadline);

  int size_ = 1;
  int hosts_ = 1;
  int host_ = 0;                            // this rank's host
  std::vector<int> host_of_;                // host of every world rank
  std::vector<std::vector<int>> ranks_of_;  // world ranks of every host, local rank order
  std::vector<int> local_ranks_;            // world ranks of this host's ranks, local rank order
  size_t local_rank_ = 0;                   // this rank's place in local_ranks_
  std::unique_ptr<ShmCollectives> shm_;     // null when this host has one rank
  std::unique_ptr<Communicator> leaders_;   // on leaders only
  bool rails_ = false;                      // every host has the same rank count (>= 2)
  std::unique_ptr<Communicator> rail_;      // this rank's rail, local ranks > 0 (0's: leaders_)
  std::string describe_;
  std::vector<char> scratch_;
};

}  // namespace cohort::collectives
