// Messages shared by every Store implementation, so that a timeout reads the same whether the
// store is in-process or across the network.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace cohort::collectives {

// The key in single quotes, with bytes that are not printable ASCII written as \xNN.
std::string QuoteKey(const std::string& key);

// Up to 8 quoted keys separated by ", ", then "and N more" for the rest.
std::string QuoteKeys(const std::vector<std::string>& keys);

// Throws Timeout: "<where> Get('k') timed out after 250 ms: the key was never set".
[[noreturn]] void ThrowGetTimeout(const std::string& where, const std::string& key,
                                  std::chrono::milliseconds waited);

// Throws Timeout naming the keys still missing out of `total` waited for.
[[noreturn]] void ThrowWaitTimeout(const std::string& where,
                                   const std::vector<std::string>& missing, size_t total,
                                   std::chrono::milliseconds waited);

}  // namespace cohort::collectives
