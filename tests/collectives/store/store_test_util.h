// Helpers shared by the store tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "tests/util/scoped_env.h"

namespace cohort::collectives::testing {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Milliseconds since start.
inline int64_t MillisSince(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

// Runs fn and expects it to throw E; returns the message ("" after recording a failure).
template <typename E, typename Fn>
std::string ThrownMessage(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another error type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

using cohort::testing::ScopedEnv;

}  // namespace cohort::collectives::testing
