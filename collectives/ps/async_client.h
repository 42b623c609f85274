// A worker's side of asynchronous mode: the job's parameters as one flat float32 vector, cut
// into partitions spread over the parameter servers (at least one per server, more when a
// partition would exceed PsOptions::partition_bytes), and the calls of one step to every
// partition at once. No libtorch: runtime/ps_async.h binds a model's tensors to it.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "collectives/ps/async_optimizer.h"
#include "collectives/ps/ps.pb.h"
#include "collectives/ps/ps_communicator.h"

namespace cohort::collectives::ps {

class PsServerClient;

struct AsyncJob {
  std::string job;     // the run id: the servers keep one state per job
  uint64_t epoch = 0;  // rank 0's random number for this start, the same on every rank
  int rank = 0;
  int world = 1;
  int staleness = -1;  // SSP's bound s; < 0: ASP (never wait); 0: BSP
};

// The slowest and fastest worker's clocks (steps pushed) over the partitions of one answer.
struct AsyncClocks {
  int64_t min = 0;
  int64_t max = 0;
};

// The servers' optimizer state of the whole vector (for a snapshot).
struct AsyncState {
  std::vector<float> slot1;  // empty: none yet
  std::vector<float> slot2;
  int64_t opt_steps = 0;  // of partition 0 (at a quiescent point every partition agrees)
};

// The job's flat vector held in pieces, in order (a model's tensors, each contiguous), as
// (first float, count): where a push reads the gradient and writes the parameters, so that
// neither needs a flat copy. The counts add up to the vector's size.
using FloatRuns = std::vector<std::pair<float*, size_t>>;
using ConstFloatRuns = std::vector<std::pair<const float*, size_t>>;

class AsyncClient {
 public:
  // Connects to every server (waiting up to timeout for each, checking it is the shard the
  // list says) for a vector of n floats. Calls time out after timeout. Throws what
  // PsServerClient::Connect throws, and InvalidArgument for no servers or n == 0.
  AsyncClient(const PsOptions& options, AsyncJob job, size_t n, std::chrono::milliseconds timeout);
  ~AsyncClient();

  size_t Partitions() const { return parts_.size(); }

  // Rank 0: creates the job's partitions on the servers with these parameters, optimizer and
  // state (slot1/slot2 null: none yet), every worker's clock at start_step.
  void Init(const AsyncOptimizerConfig& optimizer, int64_t start_step, const float* params,
            const AsyncState& state);
  // Pushes the gradient of step `step` (every partition), and writes the parameters the
  // servers answer with (once the staleness bound allows) to params: StartPush, FinishPush.
  AsyncClocks Push(int64_t step, const float* grad, float* params);
  // Starts the push of step `step`. grad is read until FinishPush returns: keep it unchanged.
  // ahead (AsyncPushRequest.ahead): 1 when the worker computes its next step before it uses
  // the answer, which is then held until the bound allows the step after (never with
  // staleness 0). One push at a time: throws InvalidArgument while one is out.
  void StartPush(int64_t step, const float* grad, int ahead);
  void StartPush(int64_t step, const ConstFloatRuns& grad, int ahead);
  // Waits for the answer to the push out and writes its parameters to params (which may be
  // the gradient's buffer). Throws what the calls failed with, naming server and partition.
  AsyncClocks FinishPush(float* params);
  AsyncClocks FinishPush(const FloatRuns& params);
  bool Pushing() const { return push_ != nullptr; }
  // The parameters for a worker that pushed step `step` (start_step - 1: none yet); with state,
  // the optimizer state too.
  AsyncClocks Pull(int64_t step, float* params, AsyncState* state = nullptr);

 private:
  struct Part {
    size_t begin = 0;
    size_t size = 0;
    size_t server = 0;  // index into servers_ and stubs_
  };
  struct Stubs;
  struct Answer;
  struct Calls;
  // Issues one call per partition (start(part, calls, ctx, done) issues it; reqs, when any,
  // are the encoded requests it may send). what: "push of step 7", and waits_for: the step
  // the slowest worker must have pushed for an answer (none: no bound applies), for errors.
  template <typename Start>
  std::unique_ptr<Calls> Launch(const Start& start, std::string what,
                                std::optional<int64_t> waits_for,
                                std::vector<grpc::ByteBuffer> reqs);
  // Waits for every call; throws the first failure (typed, naming the server, shard and
  // partition) after cancelling the rest.
  void Await(Calls& calls) const;
  // Launches the encoded requests to `method`, one per partition.
  std::unique_ptr<Calls> Send(const char* method, std::vector<grpc::ByteBuffer> reqs,
                              std::string what, std::optional<int64_t> waits_for);
  // Awaits calls; the answers, each checked to be an AsyncParams with the partition's
  // parameters (throws Internal otherwise).
  std::vector<Answer> Answers(Calls& calls) const;
  AsyncClocks Clocks(const std::vector<Answer>& answers) const;
  ::cohort::ps::AsyncKey Key(size_t part) const;
  // Throws InvalidArgument unless the runs' counts add up to the vector's size.
  template <typename Runs>
  void CheckRuns(const Runs& runs, const char* what) const;

  const AsyncJob job_;
  const size_t n_;
  const std::chrono::milliseconds timeout_;
  std::vector<std::shared_ptr<PsServerClient>> servers_;
  std::unique_ptr<Stubs> stubs_;
  std::vector<Part> parts_;
  std::unique_ptr<Calls> push_;  // the push out, between StartPush and FinishPush
};

}  // namespace cohort::collectives::ps
