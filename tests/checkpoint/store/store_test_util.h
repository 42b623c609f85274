// Helpers shared by the object-store tests: deterministic payloads and temp directories.
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace cohort::checkpoint::testing {

// n bytes from a seeded generator, so a mismatch shows up anywhere in the object.
inline std::string Payload(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + n);
  std::string out(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    for (int b = 0; b < 8; ++b) out[i + b] = static_cast<char>(v >> (8 * b));
  }
  uint64_t v = rng();
  for (; i < n; ++i, v >>= 8) out[i] = static_cast<char>(v);
  return out;
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace cohort::checkpoint::testing
