// A parameter server's state in asynchronous mode: for each job's partition that this shard
// holds, the parameters, the optimizer and its state, and every worker's clock (the steps it
// has pushed). A push applies one optimizer step at once; a pull (and the answer to a push)
// waits, holding no thread, until the staleness bound allows: the slowest worker has pushed
// every step before the one the answer is used for (step + 1, or step + 2 for a pipelined
// push's), minus the staleness. The gradient is read where gRPC received it (copied once,
// into the buffer the optimizer works on), and every answer between two pushes shares one
// copy of the parameters, which gRPC sends without copying again. Every log_every steps of
// the slowest worker it logs one line per partition with the largest lead it let a worker take
// (how many steps ahead of the slowest the step it computes with an answer is; never over the
// bound):
//   "ps-server shard 0 async job J part 0: clocks 120..122, lead at most 2 (staleness 2), 37
//    pulls waited"
#pragma once

#include <grpcpp/support/status.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "collectives/ps/ps.pb.h"

namespace cohort::collectives::ps {

// An answer to a push or pull: the AsyncParams without its params, and the params' bytes
// (float32, the partition's elements), shared by every answer given between two pushes.
struct AsyncAnswer {
  ::cohort::ps::AsyncParams head;
  std::shared_ptr<const std::string> params;
};

class AsyncTable {
 public:
  // One waiting call (a gRPC reactor).
  class Waiter {
   public:
    virtual ~Waiter() = default;
    // Called exactly once, without the table's locks held; the answer is filled when status
    // is OK.
    virtual void Answer(const grpc::Status& status, AsyncAnswer answer) = 0;
    // A push's gradient was copied out (under the partition's lock): its bytes are not read
    // again, though the answer may wait for the bound.
    virtual void Applied() {}
  };

  AsyncTable(int shard, int64_t log_every) : shard_(shard), log_every_(log_every) {}
  ~AsyncTable();

  // Creates or replaces a partition. INVALID_ARGUMENT for a bad optimizer or sizes;
  // FAILED_PRECONDITION for an epoch older than the one it holds.
  grpc::Status Init(const ::cohort::ps::AsyncInitRequest& req);
  // Applies the gradient (req's grad field left out: its bytes are the runs of grad, in order)
  // and answers w like a pull for req.step.
  void Push(const ::cohort::ps::AsyncPushRequest& req, const std::vector<std::string_view>& grad,
            Waiter* w);
  void Pull(const ::cohort::ps::AsyncPullRequest& req, Waiter* w);
  // w's call (on partition key) went away: forget it, unless already answered. True if it was
  // still waiting (the caller then finishes the call itself).
  bool Abandon(const ::cohort::ps::AsyncKey& key, Waiter* w);

 private:
  struct Partition;
  // The partition of key, or null with *why set.
  std::shared_ptr<Partition> Find(const ::cohort::ps::AsyncKey& key, grpc::Status* why);

  const int shard_;
  const int64_t log_every_;
  std::mutex mu_;  // guards the map; each partition has its own lock
  std::unordered_map<std::string, std::shared_ptr<Partition>> parts_;
};

}  // namespace cohort::collectives::ps
