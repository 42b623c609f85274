// The description of one communication operation, as backends receive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "collectives/tensor_view.h"

namespace cohort::collectives {

enum class ReduceOp : uint8_t { kSum, kAvg, kMin, kMax, kProduct };
inline constexpr ReduceOp kAllReduceOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin,
                                             ReduceOp::kMax, ReduceOp::kProduct};

enum class OpType : uint8_t {
  kAllReduce,
  kBroadcast,
  kAllGather,
  kReduceScatter,
  kSend,
  kRecv,
  kBarrier
};

const char* ReduceOpName(ReduceOp op);
// Parses "sum", "avg", "min", "max", "prod"/"product". Throws InvalidArgument.
ReduceOp ParseReduceOp(const std::string& name);
const char* OpTypeName(OpType type);

// Per-call options. A zero timeout means the communicator's default.
struct OpOptions {
  std::chrono::milliseconds timeout{0};
  // Distinguishes concurrent point-to-point messages between the same pair of ranks.
  uint32_t tag = 0;
};

struct Op {
  OpType type = OpType::kBarrier;
  TensorView in;   // what this rank contributes (send buffer for Send)
  TensorView out;  // where the result lands (receive buffer for Recv)
  ReduceOp reduce = ReduceOp::kSum;
  int peer = -1;  // broadcast root, send destination or receive source
  std::chrono::milliseconds timeout{0};
  uint32_t tag = 0;
  bool in_batch = false;  // a send or receive of a BatchSendRecv
  // Position of a collective in this communicator's sequence, from 1; 0 for send/recv, which
  // only two ranks take part in.
  uint64_t seq = 0;

  bool InPlace() const { return in.data == out.data; }
  bool IsCollective() const { return type != OpType::kSend && type != OpType::kRecv; }
  // "allreduce #17 (sum, f32[1031] cpu)", "recv from rank 2 (tag 5, u8[64] cpu)".
  std::string Describe() const;
};

}  // namespace cohort::collectives
