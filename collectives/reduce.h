// Element-wise reduction kernels for every dtype, used by the CPU backends. f16 and bf16 are
// computed in float and rounded to nearest even once per step.
#pragma once

#include <cstddef>

#include "collectives/op.h"
#include "collectives/tensor_view.h"

namespace cohort::collectives {

// out[i] = a[i] (op) b[i] for n elements; out may alias a or b. kAvg reduces as kSum (the
// division happens once, at the end, in FinishAverage).
void ReduceInto(ReduceOp op, DType dtype, void* out, const void* a, const void* b, size_t n);

// Divides n elements by divisor: the last step of an average. Integers truncate toward zero.
void FinishAverage(DType dtype, void* data, size_t n, int divisor);

// The kernel above with op and dtype bound, in the shape Gloo's options take.
using ReduceFn = void (*)(void* out, const void* a, const void* b, size_t n);
ReduceFn GetReduceFn(ReduceOp op, DType dtype);

}  // namespace cohort::collectives
