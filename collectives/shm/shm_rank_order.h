// The reduction every shared-memory collective uses: in rank order, so that every rank that
// computes it from the same bytes gets the same bits, and every backend's sum is the same sum.
#pragma once

#include <cstddef>
#include <cstring>

#include "collectives/op.h"
#include "collectives/reduce.h"
#include "collectives/tensor_view.h"

namespace cohort::collectives {

// res = src[0] op src[1] op ... op src[n - 1] (len elements), then divided by n for kAvg. res may
// alias src[0] or src[1], never a later one (it holds partial sums by then).
inline void ReduceInRankOrder(ReduceOp op, DType dtype, char* res, const char* const* src, int n,
                              size_t len) {
  if (len == 0) return;
  if (n == 1) {
    if (res != src[0]) std::memcpy(res, src[0], len * ElementSize(dtype));
    return;
  }
  ReduceInto(op, dtype, res, src[0], src[1], len);
  for (int k = 2; k < n; ++k) ReduceInto(op, dtype, res, res, src[k], len);
  if (op == ReduceOp::kAvg) FinishAverage(dtype, res, len, n);
}

}  // namespace cohort::collectives
