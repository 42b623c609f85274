#include "collectives/reduce.h"

#include <algorithm>
#include <cstdint>

#include "common/error.h"
#include "common/half.h"

namespace cohort::collectives {
namespace {

struct Sum {
  template <typename T>
  static T Apply(T a, T b) {
    return a + b;
  }
};
struct Prod {
  template <typename T>
  static T Apply(T a, T b) {
    return a * b;
  }
};
struct Min {
  template <typename T>
  static T Apply(T a, T b) {
    return b < a ? b : a;
  }
};
struct Max {
  template <typename T>
  static T Apply(T a, T b) {
    return a < b ? b : a;
  }
};

// Plain arithmetic types: a loop the compiler vectorizes.
template <typename F, typename T>
void Loop(void* out, const void* a, const void* b, size_t n) {
  T* o = static_cast<T*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = F::template Apply<T>(x[i], y[i]);
}

// 16-bit floats: widen to float, apply, round once. Done in blocks so the conversions and the
// arithmetic each run as their own vectorizable loop.
template <typename F, float (*Widen)(uint16_t), uint16_t (*Narrow)(float)>
void LoopHalf(void* out, const void* a, const void* b, size_t n) {
  constexpr size_t kBlock = 256;
  float fa[kBlock], fb[kBlock];
  uint16_t* o = static_cast<uint16_t*>(out);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  for (size_t base = 0; base < n; base += kBlock) {
    const size_t m = std::min(kBlock, n - base);
    for (size_t i = 0; i < m; ++i) fa[i] = Widen(x[base + i]);
    for (size_t i = 0; i < m; ++i) fb[i] = Widen(y[base + i]);
    for (size_t i = 0; i < m; ++i) fa[i] = F::template Apply<float>(fa[i], fb[i]);
    for (size_t i = 0; i < m; ++i) o[base + i] = Narrow(fa[i]);
  }
}

template <typename F>
ReduceFn ForDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return &Loop<F, float>;
    case DType::kFloat64:
      return &Loop<F, double>;
    case DType::kInt32:
      return &Loop<F, int32_t>;
    case DType::kInt64:
      return &Loop<F, int64_t>;
    case DType::kUInt8:
      return &Loop<F, uint8_t>;
    case DType::kFloat16:
      return &LoopHalf<F, HalfToFloat, FloatToHalf>;
    case DType::kBFloat16:
      return &LoopHalf<F, BFloat16ToFloat, FloatToBFloat16>;
  }
  throw Internal("reduce: unknown dtype");
}

template <typename T>
void DivideLoop(void* data, size_t n, int divisor) {
  T* p = static_cast<T*>(data);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / static_cast<T>(divisor));
}

template <float (*Widen)(uint16_t), uint16_t (*Narrow)(float)>
void DivideHalf(void* data, size_t n, int divisor) {
  uint16_t* p = static_cast<uint16_t*>(data);
  const float d = static_cast<float>(divisor);
  for (size_t i = 0; i < n; ++i) p[i] = Narrow(Widen(p[i]) / d);
}

}  // namespace

ReduceFn GetReduceFn(ReduceOp op, DType dtype) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return ForDType<Sum>(dtype);
    case ReduceOp::kProduct:
      return ForDType<Prod>(dtype);
    case ReduceOp::kMin:
      return ForDType<Min>(dtype);
    case ReduceOp::kMax:
      return ForDType<Max>(dtype);
  }
  throw Internal("reduce: unknown op");
}

void ReduceInto(ReduceOp op, DType dtype, void* out, const void* a, const void* b, size_t n) {
  GetReduceFn(op, dtype)(out, a, b, n);
}

void FinishAverage(DType dtype, void* data, size_t n, int divisor) {
  if (divisor == 1 || n == 0) return;
  switch (dtype) {
    case DType::kFloat32:
      return DivideLoop<float>(data, n, divisor);
    case DType::kFloat64:
      return DivideLoop<double>(data, n, divisor);
    case DType::kInt32:
      return DivideLoop<int32_t>(data, n, divisor);
    case DType::kInt64:
      return DivideLoop<int64_t>(data, n, divisor);
    case DType::kUInt8:
      return DivideLoop<uint8_t>(data, n, divisor);
    case DType::kFloat16:
      return DivideHalf<HalfToFloat, FloatToHalf>(data, n, divisor);
    case DType::kBFloat16:
      return DivideHalf<BFloat16ToFloat, FloatToBFloat16>(data, n, divisor);
  }
}

}  // namespace cohort::collectives
