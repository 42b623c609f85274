#include "collectives/op.h"

#include <fmt/format.h>

#include "common/error.h"

namespace cohort::collectives {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMin:
      return "min";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kProduct:
      return "prod";
  }
  return "?";
}

ReduceOp ParseReduceOp(const std::string& name) {
  if (name == "sum") return ReduceOp::kSum;
  if (name == "avg" || name == "mean") return ReduceOp::kAvg;
  if (name == "min") return ReduceOp::kMin;
  if (name == "max") return ReduceOp::kMax;
  if (name == "prod" || name == "product") return ReduceOp::kProduct;
  throw InvalidArgument(
      fmt::format("unknown reduce op '{}'; use sum, avg, min, max or prod", name));
}

const char* OpTypeName(OpType type) {
  switch (type) {
    case OpType::kAllReduce:
      return "allreduce";
    case OpType::kBroadcast:
      return "broadcast";
    case OpType::kAllGather:
      return "allgather";
    case OpType::kReduceScatter:
      return "reducescatter";
    case OpType::kSend:
      return "send";
    case OpType::kRecv:
      return "recv";
    case OpType::kBarrier:
      return "barrier";
  }
  return "?";
}

std::string Op::Describe() const {
  switch (type) {
    case OpType::kAllReduce:
    case OpType::kReduceScatter:
      return fmt::format("{} #{} ({}, {})", OpTypeName(type), seq, ReduceOpName(reduce),
                         in.ToString());
    case OpType::kAllGather:
      return fmt::format("{} #{} ({})", OpTypeName(type), seq, in.ToString());
    case OpType::kBroadcast:
      return fmt::format("broadcast #{} (root {}, {})", seq, peer, out.ToString());
    case OpType::kBarrier:
      return fmt::format("barrier #{}", seq);
    case OpType::kSend:
      return fmt::format("send to rank {} (tag {}, {})", peer, tag, in.ToString());
    case OpType::kRecv:
      return fmt::format("recv from rank {} (tag {}, {})", peer, tag, out.ToString());
  }
  return "?";
}

}  // namespace cohort::collectives
