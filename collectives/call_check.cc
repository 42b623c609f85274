#include "collectives/call_check.h"

#include <fmt/format.h>

#include <cstring>

#include "collectives/tensor_view.h"
#include "common/error.h"

namespace cohort::collectives {

CallSignature SignatureOf(const Op& op) {
  CallSignature s;
  std::memset(&s, 0, sizeof(s));
  s.seq = op.seq;
  s.count = op.type == OpType::kBroadcast ? op.out.count : op.in.count;
  if (op.type == OpType::kBarrier) s.count = 0;
  s.type = static_cast<uint8_t>(op.type);
  s.dtype = static_cast<uint8_t>(op.in.dtype);
  s.reduce = static_cast<uint8_t>(op.reduce);
  s.peer = op.peer;
  return s;
}

std::string SignatureText(const CallSignature& s) {
  Op o;
  o.type = static_cast<OpType>(s.type);
  o.seq = s.seq;
  o.reduce = static_cast<ReduceOp>(s.reduce);
  o.peer = s.peer;
  o.in = TensorView(nullptr, s.count, static_cast<DType>(s.dtype));
  o.out = o.in;
  return o.Describe();
}

void CheckSameCall(const CallSignature* all, int size, int rank) {
  const CallSignature& mine = all[rank];
  for (int r = 0; r < size; ++r) {
    if (std::memcmp(&all[r], &mine, sizeof(mine)) != 0) {
      throw InvalidArgument(
          fmt::format("ranks called different operations: rank {} called {} but rank {} called {}",
                      rank, SignatureText(mine), r, SignatureText(all[r])));
    }
  }
}

}  // namespace cohort::collectives
