// Copies out of the shared segment into the caller's buffers. A large result is written with
// non-temporal stores: a regular store first reads every line of out into the cache (the read
// for ownership), a third memory pass, and evicts the segment's pieces, which the next piece
// needs. Small results stay in the cache, where their reader wants them.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cohort::collectives {

// Whether an operation whose every rank writes out_bytes (in and out of every rank together
// exceed the last-level cache) should write its result with StreamCopy.
inline bool StreamsResult(size_t out_bytes, int size) {
  static const size_t llc = [] {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return l3 > 0 ? static_cast<size_t>(l3) : size_t{32} << 20;
  }();
  return out_bytes * 2 * static_cast<size_t>(size) > llc;
}

// memcpy with non-temporal stores where the CPU has them (x86 SSE2), memcpy elsewhere.
inline void StreamCopy(char* dst, const char* src, size_t n) {
#if defined(__SSE2__)
  const size_t head = std::min(n, (16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16);
  std::memcpy(dst, src, head);
  dst += head, src += head, n -= head;
  for (; n >= 64; n -= 64, dst += 64, src += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 48), d);
  }
  _mm_sfence();
#endif
  std::memcpy(dst, src, n);
}

}  // namespace cohort::collectives
