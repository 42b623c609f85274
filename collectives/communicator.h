// Communicator: a group of ranks and the operations between them. Every operation is
// asynchronous and returns a Work. This class validates arguments (one-line errors saying how
// to fix them), numbers the collectives, reports progress to the HealthMonitor and turns a
// failure or timeout into an error that names the ranks to blame. Backends implement Submit().
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collectives/health.h"
#include "collectives/op.h"
#include "collectives/store/store.h"
#include "collectives/tensor_view.h"
#include "collectives/work.h"
#include "common/error.h"

namespace cohort::collectives {

// One send or receive of a batch (Communicator::BatchSendRecv).
struct P2POp {
  OpType type = OpType::kSend;  // kSend or kRecv
  TensorView buf;               // what is sent, or where it is received
  int peer = -1;                // destination or source rank, in this communicator
  uint32_t tag = 0;
};

// What every backend needs to start.
struct CommConfig {
  int rank = 0;
  int size = 1;
  // Rendezvous and health reports; may be null only for MPI, which bootstraps itself (then
  // timeouts cannot name the stuck ranks).
  std::shared_ptr<Store> store;
  // Keys of this communicator live under "cohort/<run_id>/<restart>/comm/<name>/": two
  // communicators of one job need different names, and each job (COHORT_RUN_ID) and restart
  // (COHORT_RESTART) gets keys of its own on a shared store.
  std::string name = "world";
  std::string run_id = "default";
  int restart = 0;
  // Default timeout of each operation (COHORT_TIMEOUT, 300 s).
  std::chrono::milliseconds timeout{300000};
  // How long to wait for all ranks to join at creation.
  std::chrono::milliseconds connect_timeout{60000};
  // Heartbeat interval of the health monitor (COHORT_HEARTBEAT_INTERVAL, 0.5 s).
  std::chrono::milliseconds heartbeat{500};
  // Check that every rank calls the same operation with the same shape (COHORT_DEBUG_COLLECTIVES).
  bool debug_checks = false;
  // A group made by Split(): its display name ("pp-stage-0") and, for each rank of the group,
  // its rank in the job (global_ranks[r]). Empty for the job's own communicator, whose ranks are
  // the global ones. Errors name both numberings.
  std::string group;
  std::vector<int> global_ranks;
  // Reads COHORT_TIMEOUT, COHORT_STORE_TIMEOUT, COHORT_HEARTBEAT_INTERVAL,
  // COHORT_DEBUG_COLLECTIVES, COHORT_RUN_ID and COHORT_RESTART.
  static CommConfig FromEnv(int rank, int size, std::shared_ptr<Store> store);
};

class Communicator {
 public:
  explicit Communicator(const CommConfig& config);
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int Rank() const { return rank_; }
  int Size() const { return size_; }
  // "gloo", "mpi", "nccl", ...
  virtual const char* Backend() const = 0;
  // The device kind whose tensors this communicator moves.
  virtual DeviceType Devices() const { return DeviceType::kCPU; }

  // Reduces buf across ranks, in place.
  WorkPtr AllReduce(TensorView buf, ReduceOp op, const OpOptions& opts = {});
  // Reduces in across ranks into out (same dtype and count).
  WorkPtr AllReduce(TensorView in, TensorView out, ReduceOp op, const OpOptions& opts = {});
  // Copies root's buf to every rank's buf.
  WorkPtr Broadcast(TensorView buf, int root, const OpOptions& opts = {});
  // out = concatenation of every rank's in, in rank order; out.count = in.count * Size().
  // In place when in is out's slice for this rank (in.data == out.data + Rank() * in.bytes()).
  WorkPtr AllGather(TensorView in, TensorView out, const OpOptions& opts = {});
  // Reduces in across ranks and leaves slice Rank() of the result in out;
  // in.count = out.count * Size(). In place when out is in's slice for this rank.
  WorkPtr ReduceScatter(TensorView in, TensorView out, ReduceOp op, const OpOptions& opts = {});
  // Sends buf to rank dst; the matching Recv must use the same tag and size (NCCL: tag 0 only;
  // see nccl_communicator.h).
  WorkPtr Send(TensorView buf, int dst, const OpOptions& opts = {});
  // Receives into buf from rank src.
  WorkPtr Recv(TensorView buf, int src, const OpOptions& opts = {});
  // Completes on each rank once every rank has entered it.
  WorkPtr Barrier(const OpOptions& opts = {});

  // Starts every send and receive of ops together and returns their Works, in the order of ops.
  // Every op is posted before any is waited for, so two ranks that send to each other in one
  // batch never deadlock (the schedules of a pipeline do it every step). Each op is checked
  // first: a bad one throws InvalidArgument and nothing of the batch starts. opts.tag is unused;
  // each op carries its own.
  std::vector<WorkPtr> BatchSendRecv(const std::vector<P2POp>& ops, const OpOptions& opts = {});

  // The color that leaves the calling rank out of every group of a Split (MPI_UNDEFINED).
  static constexpr int kNoColor = -1;
  // Collective over this communicator (MPI_Comm_split): every rank calls it, in the same order
  // relative to the other collectives. Returns a communicator over the ranks that passed the same
  // color, ranked by key (ties by rank here), or nullptr for kNoColor. group names the new group
  // in errors ("pp-stage-0"; each rank passes its own group's name; empty: "<color>"). The new
  // communicator is independent: its operations never match this one's, and it may outlive it.
  // Throws InvalidArgument for a color below kNoColor; what the backend throws when the group
  // cannot connect (naming the ranks that never joined).
  std::unique_ptr<Communicator> Split(int color, int key, const std::string& group = "");

  // This communicator's group name, "" for the job's own communicator.
  const std::string& Group() const { return config_.group; }
  // The job-wide rank of rank r of this communicator.
  int GlobalRank(int r) const;
  // How errors name rank r: "rank 3" in the job's communicator, "rank 1 of group pp-stage-0
  // (global rank 3)" in a group.
  std::string RankName(int r) const;

  // True after an operation failed or timed out: the group is out of step and every later
  // operation fails at once with the first error.
  bool IsBroken() const { return broken_.load(); }

 protected:
  // Starts op and returns its Work. op is valid and carries its sequence number and timeout.
  virtual WorkPtr Submit(Op op) = 0;
  // Backend-specific argument checks (throw InvalidArgument). They run before the op takes a
  // sequence number, so a rejected call leaves this rank in step with the others.
  virtual void Validate(const Op& op) const {}
  // Starts the sends and receives of one batch; every op is valid. The default submits them one
  // by one, which suits backends whose Submit() posts point-to-point ops without blocking (Gloo
  // and MPI); NCCL groups them (ncclGroupStart/End).
  virtual std::vector<WorkPtr> SubmitBatch(std::vector<Op> ops);

  // What a backend needs to build one group of a Split.
  struct SplitInfo {
    int color = kNoColor;  // this rank's color (kNoColor: it joins no group)
    int key = 0;
    std::vector<int> members;  // this communicator's ranks in the new group, in the new order
    CommConfig config;         // the new group's config: rank, size, name, group, global_ranks
  };
  // Builds this rank's new group, or returns nullptr for kNoColor. Called on every rank of this
  // communicator, kNoColor ones too (MPI_Comm_split and ncclCommSplit are collective over the
  // parent), right after the ranks have exchanged their colors and keys through this
  // communicator, so that no earlier operation of this communicator is still queued.
  virtual std::unique_ptr<Communicator> CreateGroup(const SplitInfo& info);

  // A Work whose Wait() timeout runs OnWaitTimeout().
  WorkPtr NewWork(Op op);
  // Backends call these around the execution of each op.
  void OpStarted(Work& work);
  void OpFinished(Work& work, std::exception_ptr error);
  // Turns a backend failure into a typed error: kind plus the op, the backend's detail and the
  // health monitor's verdict naming the ranks to blame. Marks the communicator broken.
  std::exception_ptr Blame(const Op& op, ErrorKind kind, const std::string& detail);
  // The error later operations fail with once the communicator is broken.
  std::exception_ptr BrokenError() const;
  // Throws Unsupported: "backend X does not support Y".
  [[noreturn]] void NotSupported(const Op& op, const std::string& why = "") const;
  // Called by Work::Wait() when its deadline passes; finishes the work with a Timeout. Backends
  // that can abort a stuck operation (NCCL) override it and call the base.
  virtual void OnWaitTimeout(Work& work);

  const CommConfig& config() const { return config_; }
  HealthMonitor* health() { return health_.get(); }
  // Key prefix of this communicator on the store: "cohort/<run_id>/<restart>/comm/<name>".
  std::string Scope() const;

 private:
  // The op these arguments describe, after the backend's checks (not yet numbered).
  Op MakeOp(OpType type, TensorView in, TensorView out, ReduceOp reduce, int peer,
            const OpOptions& opts, bool in_batch = false) const;
  // Builds the op, checks it, numbers it and submits it.
  WorkPtr Start(OpType type, TensorView in, TensorView out, ReduceOp reduce, int peer,
                const OpOptions& opts);
  void CheckDevice(const TensorView& t, const char* what) const;
  void CheckRank(int r, const char* what) const;
  // A send's or receive's buffer and peer; what names the call in errors ("send").
  void CheckPeer(OpType type, const TensorView& buf, int peer, const std::string& what) const;

  const CommConfig config_;
  const int rank_;
  const int size_;
  std::unique_ptr<HealthMonitor> health_;
  std::mutex seq_mu_;  // keeps seq order == submission order across threads
  uint64_t next_seq_ = 1;
  // Split() calls so far: a group's store scope is "<name>/split-<n>-c<color>".
  int splits_ = 0;
  std::atomic<bool> broken_{false};
  mutable std::mutex broken_mu_;
  std::exception_ptr broken_error_;
  std::string broken_what_;
};

}  // namespace cohort::collectives
