#include "common/utc_time.h"

#include <fmt/format.h>

#include <chrono>
#include <ctime>

namespace cohort {
namespace {

// "2026-12-03T10:01:05" for t, in UTC.
std::string Seconds(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::string UtcNowRfc3339() { return Seconds(std::time(nullptr)) + "Z"; }

std::string UtcNowRfc3339Micros() {
  const auto now = std::chrono::system_clock::now();
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  return fmt::format("{}.{:06d}Z", Seconds(std::chrono::system_clock::to_time_t(now)), micros);
}

}  // namespace cohort
