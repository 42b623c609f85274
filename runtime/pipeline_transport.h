// PipelineTransport: how the activations and gradients of a pipeline travel between neighbouring
// stages over the pp ProcessGroup. Sends are queued and posted together with the next receive
// in one BatchSendRecv, so two neighbours that send to each other at once never deadlock; they
// complete in the background and Flush() waits for them at the end of a step. A small header
// (dtype, shape of a row, batch rows, micro-batch count) goes ahead of a step's first
// activation, so the receiver can size its buffers and shapes may change from step to step.
//
// Errors name both ends ("pipeline stage 2 (global rank 5): receiving activations of micro-batch
// 3 from stage 1 (global rank 3) failed: ..."). The first failure of a pipeline is recorded on
// the store, and every later failure of another stage quotes it, so the rank that went away is
// named by every stage, not only by its neighbours.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/process_group.h"
#include "runtime/torch_fwd.h"

namespace cohort::runtime {

// What a stage sends ahead of its first activation of a step.
struct ActivationHeader {
  int dtype = 0;                   // at::ScalarType
  std::vector<int64_t> row_shape;  // the activation's shape after dim 0 (the batch)
  int64_t batch = 0;               // rows of the whole batch (every micro-batch together)
  int micro_batches = 0;
  // "[*, 16] Float" (* is the batch).
  std::string Describe() const;
  bool operator==(const ActivationHeader& o) const;
};

class PipelineTransport {
 public:
  static constexpr uint32_t kHeaderTag = 0x7101;
  static constexpr uint32_t kActivationTag = 0x7102;
  static constexpr uint32_t kGradientTag = 0x7103;

  // pp: the pipeline's group; stage i is its rank i.
  explicit PipelineTransport(std::shared_ptr<ProcessGroup> pp);
  ~PipelineTransport();
  PipelineTransport(const PipelineTransport&) = delete;
  PipelineTransport& operator=(const PipelineTransport&) = delete;

  int stage() const { return pp_->Rank(); }
  int stages() const { return pp_->Size(); }
  ProcessGroup& group() { return *pp_; }
  // "stage 1 (global rank 3)".
  std::string StageName(int stage) const;

  // Queues t (kept alive here until it is sent) for stage dst; posted with the next Receive or
  // Flush. what describes it in errors ("activations of micro-batch 2").
  void QueueSend(const at::Tensor& t, int dst, uint32_t tag, const std::string& what);
  // Posts the queued sends and a receive into t from stage src in one batch, and waits for the
  // receive. Throws the communication error, naming both stages, as the same kind.
  void Receive(const at::Tensor& t, int src, uint32_t tag, const std::string& what);
  // Posts the queued sends now, without waiting (before a pass that receives nothing, so the
  // neighbour need not wait for this stage's next receive).
  void Post();
  // Posts the queued sends and waits for every send since the last Flush.
  void Flush();

  void SendHeader(const ActivationHeader& header, int dst);
  // Throws DataLoss when what arrives is not a header (the stages run different code).
  ActivationHeader ReceiveHeader(int src);

  // Sums value over the stages (the loss, known on the last stage) and returns the sum.
  double AllReduce(double value);

  // Records message as the pipeline's first failure on the store unless one is recorded, and
  // keeps every tensor a pending operation may still touch alive (the group is broken from now
  // on, and the backend may still write into a posted receive).
  void Fail(const std::string& message);

 private:
  struct State;
  [[noreturn]] void Rethrow(const std::exception& e, const std::string& what, int peer);
  std::string FirstFailure() const;
  std::string FailureKey() const;

  std::shared_ptr<ProcessGroup> pp_;
  std::unique_ptr<State> state_;
};

}  // namespace cohort::runtime
