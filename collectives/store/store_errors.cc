#include "collectives/store/store_errors.h"

#include <fmt/format.h>

#include "common/error.h"

namespace cohort::collectives {

std::string QuoteKey(const std::string& key) {
  std::string out = "'";
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  out += "'";
  return out;
}

std::string QuoteKeys(const std::vector<std::string>& keys) {
  constexpr size_t kShown = 8;
  std::string out;
  for (size_t i = 0; i < keys.size() && i < kShown; ++i) {
    if (i > 0) out += ", ";
    out += QuoteKey(keys[i]);
  }
  if (keys.size() > kShown) out += fmt::format(" and {} more", keys.size() - kShown);
  return out;
}

void ThrowGetTimeout(const std::string& where, const std::string& key,
                     std::chrono::milliseconds waited) {
  throw Timeout(
      fmt::format("{} Get({}) timed out after {} ms: the key was never set; is the rank "
                  "that sets it running and using the same store and prefix?",
                  where, QuoteKey(key), waited.count()));
}

void ThrowWaitTimeout(const std::string& where, const std::vector<std::string>& missing,
                      size_t total, std::chrono::milliseconds waited) {
  throw Timeout(fmt::format("{} Wait timed out after {} ms: {} of {} keys still missing: {}", where,
                            waited.count(), missing.size(), total, QuoteKeys(missing)));
}

}  // namespace cohort::collectives
