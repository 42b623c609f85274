// Inputs and expected results for collective tests, computed independently of the library: the
// values are small integers (exact in every dtype), reductions are done in double here, and 16-bit
// floats are decoded and encoded by code of the test's own.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "collectives/op.h"
#include "collectives/tensor_view.h"

namespace cohort::testing {

using collectives::DType;
using collectives::ReduceOp;

// The value rank r contributes at element i for the k-th operation of a run. Unsigned dtypes get
// [0, 8], signed ones [-4, 4]; a product over 4 ranks stays within bf16's exact integers (256).
inline double InputValue(DType dtype, int r, size_t i, int k) {
  const int64_t v = static_cast<int64_t>((i * 7 + static_cast<size_t>(r) * 13 + k) % 9);
  return dtype == DType::kUInt8 ? static_cast<double>(v) : static_cast<double>(v - 4);
}

// Decodes a stored element to double (the test's own f16/bf16 decoding).
inline double Load(DType dtype, const void* base, size_t i) {
  switch (dtype) {
    case DType::kFloat32:
      return static_cast<const float*>(base)[i];
    case DType::kFloat64:
      return static_cast<const double*>(base)[i];
    case DType::kInt32:
      return static_cast<const int32_t*>(base)[i];
    case DType::kInt64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::kUInt8:
      return static_cast<const uint8_t*>(base)[i];
    case DType::kBFloat16: {
      uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[i]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::kFloat16: {
      const uint16_t h = static_cast<const uint16_t*>(base)[i];
      const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
      double mag = exp == 0    ? std::ldexp(mant, -24)
                   : exp == 31 ? (mant ? NAN : INFINITY)
                               : std::ldexp(1024 + mant, exp - 25);
      return sign ? -mag : mag;
    }
  }
  return NAN;
}

// Stores a small integer value (exact in every dtype, so no rounding question arises).
inline void StoreExact(DType dtype, void* base, size_t i, double v) {
  switch (dtype) {
    case DType::kFloat32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      return;
    case DType::kFloat64:
      static_cast<double*>(base)[i] = v;
      return;
    case DType::kInt32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v);
      return;
    case DType::kInt64:
      static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v);
      return;
    case DType::kUInt8:
      static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v);
      return;
    case DType::kBFloat16: {
      float f = static_cast<float>(v);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      static_cast<uint16_t*>(base)[i] = static_cast<uint16_t>(bits >> 16);  // exact: low bits 0
      return;
    }
    case DType::kFloat16: {
      // |v| <= 2048 integer: exact in binary16. Build it by hand.
      uint16_t h = 0;
      if (v != 0) {
        const double a = std::fabs(v);
        int e = 0;
        const double m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
        h = static_cast<uint16_t>(((e + 14) << 10) | (static_cast<int>(m * 2048) & 1023));
        if (v < 0) h |= 0x8000;
      }
      static_cast<uint16_t*>(base)[i] = h;
      return;
    }
  }
}

// The reduction of the inputs of ranks [0, size) at element i, as the dtype must hold it.
inline double Expected(DType dtype, ReduceOp op, int size, size_t i, int k) {
  double acc = InputValue(dtype, 0, i, k);
  for (int r = 1; r < size; ++r) {
    const double v = InputValue(dtype, r, i, k);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        acc += v;
        break;
      case ReduceOp::kProduct:
        acc *= v;
        break;
      case ReduceOp::kMin:
        acc = std::fmin(acc, v);
        break;
      case ReduceOp::kMax:
        acc = std::fmax(acc, v);
        break;
    }
  }
  if (dtype == DType::kUInt8)
    acc = static_cast<double>(static_cast<uint8_t>(static_cast<int64_t>(acc)));
  if (op == ReduceOp::kAvg) {
    if (collectives::IsFloatingPoint(dtype)) return acc / size;
    return static_cast<double>(static_cast<int64_t>(acc) / size);  // truncates toward zero
  }
  return acc;
}

// Largest error allowed for this dtype: exact, except an average's one rounding.
inline bool Close(DType dtype, ReduceOp op, double got, double want) {
  if (op != ReduceOp::kAvg || !collectives::IsFloatingPoint(dtype)) return got == want;
  const double rel = dtype == DType::kFloat16    ? 1.0 / 1024
                     : dtype == DType::kBFloat16 ? 1.0 / 128
                     : dtype == DType::kFloat32  ? 1e-7
                                                 : 1e-15;
  return std::fabs(got - want) <= rel * std::fabs(want) + 1e-300;
}

}  // namespace cohort::testing
