#include "checkpoint/store/key.h"

#include <fmt/format.h>

#include "common/error.h"

namespace cohort::checkpoint::internal {
namespace {

// Returns what is wrong with the segments of text, or "" when nothing is. The last segment may
// be empty only for prefixes ("run/").
std::string Problem(const std::string& text, bool is_prefix) {
  if (text.find('\0') != std::string::npos) return "it contains a NUL byte";
  if (!text.empty() && text.front() == '/') return "it starts with '/' (keys are relative)";
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('/', start);
    bool last = end == std::string::npos;
    if (last) end = text.size();
    std::string segment = text.substr(start, end - start);
    if (segment.empty() && !(last && is_prefix))
      return "it has an empty segment ('//' or a trailing '/')";
    if ((segment == "." || segment == "..") && !(last && is_prefix))
      return fmt::format("it has a '{}' segment", segment);
    if (last) break;
    start = end + 1;
  }
  return "";
}

}  // namespace

void ValidateKey(const std::string& store_uri, const std::string& key) {
  if (key.empty())
    throw InvalidArgument(fmt::format("{}: an object key must not be empty", store_uri));
  std::string problem = Problem(key, /*is_prefix=*/false);
  if (!problem.empty())
    throw InvalidArgument(
        fmt::format("{}: invalid object key '{}': {}; use a relative "
                    "'/'-separated path like 'run/step-10/rank-0.h5'",
                    store_uri, key, problem));
}

void ValidatePrefix(const std::string& store_uri, const std::string& prefix) {
  if (prefix.empty()) return;
  std::string problem = Problem(prefix, /*is_prefix=*/true);
  if (!problem.empty())
    throw InvalidArgument(
        fmt::format("{}: invalid list prefix '{}': {}", store_uri, prefix, problem));
}

std::string JoinKey(const std::string& root, const std::string& key) {
  if (root.empty()) return key;
  if (key.empty()) return root;
  if (root.back() == '/') return root + key;
  return root + "/" + key;
}

}  // namespace cohort::checkpoint::internal
