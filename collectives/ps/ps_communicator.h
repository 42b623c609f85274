// The `ps` backend: collectives through sharded parameter servers (`cohort ps-server`), for
// where no collective backend can run. Each collective is cut into partitions of
// COHORT_PS_PARTITION_BYTES (4 MiB), or into one piece per server when that leaves servers idle
// (PartitionElements), spread over the servers round-robin (starting at a shard that moves with
// the sequence number, so small ones spread too); every rank pushes each partition
// to its server, which combines the pushes of all ranks in rank order and answers each rank.
// Synchronous: AllReduce (every ReduceOp), Broadcast, AllGather, Barrier and Split; the rest is
// refused ("backend ps does not support send").
// Ranks on several hosts, several on one (collectives/hier/): all-reduce, broadcast and small
// all-gathers go through shared memory inside each host and to the servers from one rank per
// host (or, for large all-reduces, from every rank with its 1/L slice: the rails), as BytePS
// reduces inside a machine before it pushes: the servers take one push per host instead of one
// per rank, and the bytes a host sends them drop L times. COHORT_HIER=0 on any rank turns it off.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collectives/threaded_communicator.h"

namespace cohort::collectives {
class HierCollectives;
}  // namespace cohort::collectives

namespace cohort::collectives::ps {

class PsServerClient;
class Exchange;

struct PsOptions {
  std::vector<std::string> servers;   // host:port of each shard, in shard order
  size_t partition_bytes = 4u << 20;  // the same on every rank
  std::string token;                  // COHORT_TOKEN
  // Reads COHORT_PS_SERVERS, COHORT_PS_PARTITION_BYTES and COHORT_TOKEN. Throws
  // InvalidArgument for a malformed value.
  static PsOptions FromEnv();
};

// Below this, a collective is not cut into more pieces to reach more servers.
constexpr size_t kMinSplitBytes = 64 << 10;

// Elements per partition of a collective of count elements: partition_bytes' worth, or, when
// that leaves some of the servers idle, about count / servers (at least kMinSplitBytes' worth).
// The same on every rank, since count is.
size_t PartitionElements(size_t count, size_t element_size, size_t partition_bytes, size_t servers);

class PsCommunicator : public ThreadedCommunicator {
 public:
  // Connects to every server of PsOptions::FromEnv() (waiting up to config.connect_timeout for
  // each to come up) and checks each is the shard the list says. Throws Unavailable naming the
  // server that is not up, Unauthenticated when one refuses the token.
  explicit PsCommunicator(const CommConfig& config);
  PsCommunicator(const CommConfig& config, PsOptions options);
  ~PsCommunicator() override;

  const char* Backend() const override { return "ps"; }

  // Empty if ps can run here, else one line saying why not (no servers configured).
  static std::string UnavailableReason(const CommConfig& config);

 protected:
  void Validate(const Op& op) const override;
  std::unique_ptr<Pending> Run(const Op& op) override;
  // A group talks to the same servers, under its own scope and sequence numbers.
  std::unique_ptr<Communicator> CreateGroup(const SplitInfo& info) override;

 private:
  // A group's constructor: shares the parent's (connected) clients.
  PsCommunicator(const CommConfig& config, PsOptions options,
                 std::vector<std::shared_ptr<PsServerClient>> servers);
  // Adds one call per partition of n elements (at least one, so that every rank's pushes meet
  // on one server even when counts differ) and returns the elements per partition.
  size_t AddPartitions(Exchange& ex, const Op& op, int kind, const TensorView& t) const;
  // Agrees with the other ranks on this communicator's epoch (rank 0's random number, gathered
  // through shard 0 as collective #0), so that its pushes never meet those of an earlier job
  // that had the same run id, restart and name. Returns the scope its pushes carry.
  std::string Join(std::chrono::milliseconds timeout);
  void RunAllReduce(const Op& op);
  void RunBroadcast(const Op& op);
  void RunAllGather(const Op& op);
  void RunBarrier(const Op& op);
  // Opens an Attend call to every server for this communicator's scope; EndAttendance cancels
  // them and waits until gRPC is done with them.
  void StartAttendance();
  void EndAttendance();
  // Makes hier_ where the world spans hosts (collective; not for the hierarchy's own groups).
  void MakeHierarchy(const CommConfig& config);

  const PsOptions options_;
  std::vector<std::shared_ptr<PsServerClient>> servers_;
  std::string scope_;  // Scope() plus the epoch
  struct Attendance;
  std::deque<Attendance> attendance_;
  std::mutex attend_mu_;
  std::condition_variable attend_cv_;
  size_t attending_ = 0;                   // calls gRPC has not finished yet
  std::unique_ptr<HierCollectives> hier_;  // null: every rank pushes everything itself
};

}  // namespace cohort::collectives::ps
