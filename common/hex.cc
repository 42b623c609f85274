#include "common/hex.h"

#include <fmt/format.h>

#include <cstdint>
#include <random>

#include "common/error.h"

namespace cohort {

std::string Hex(const void* bytes, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  const auto* b = static_cast<const unsigned char*>(bytes);
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[b[i] >> 4];
    out[2 * i + 1] = kDigits[b[i] & 15];
  }
  return out;
}

std::string RandomHex(int bytes) {
  try {
    std::random_device rd;
    std::string s;
    s.reserve(2 * static_cast<size_t>(bytes));
    for (int i = 0; i < bytes; ++i) {
      const auto byte = static_cast<unsigned char>(rd() & 0xff);
      s += Hex(&byte, 1);
    }
    return s;
  } catch (const std::exception& e) {
    throw Unavailable(fmt::format("no random source for {} random bytes: {}", bytes, e.what()));
  }
}

}  // namespace cohort
