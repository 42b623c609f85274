// Bounded spinning before blocking. A futex sleep and wake-up costs tens of microseconds on a
// busy VM; an 8-byte collective takes a few. Spin only briefly, and yield when the machine is
// oversubscribed, so that a spinning thread never starves the one it waits for.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace cohort {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Default spin budget before sleeping.
inline constexpr std::chrono::microseconds kSpinBudget{50};

// Polls done() for up to budget; true as soon as it returns true.
template <typename Pred>
bool SpinUntil(Pred done, std::chrono::microseconds budget = kSpinBudget) {
  if (done()) return true;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (int i = 0;; ++i) {
    for (int j = 0; j < 32; ++j) {
      CpuRelax();
      if (done()) return true;
    }
    if ((i & 7) == 7) std::this_thread::yield();
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

// For a loop polling something that may take long (a GPU stream, an asynchronous call): the
// first polls yield (short operations finish within microseconds), later ones sleep up to
// 100 us, which bounds both the latency added to long operations and the CPU spent polling.
// n: the polls so far.
inline void PollBackoff(int n) {
  if (n < 64) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(std::min(100, (n - 63) * 5)));
  }
}

}  // namespace cohort
