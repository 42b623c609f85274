// Key rules shared by every ObjectStore, so that a snapshot written to one backend can be copied
// to another: '/'-separated, relative, no empty, "." or ".." segments, no NUL. The same key then
// names the same object on file:// (a path under the root), s3:// and memory://.
#pragma once

#include <string>

namespace cohort::checkpoint::internal {

// Throws InvalidArgument naming the store and the key when the key breaks the rules above.
void ValidateKey(const std::string& store_uri, const std::string& key);

// A List() prefix: empty, or a key prefix (it may end with '/'; it may stop mid-segment).
void ValidatePrefix(const std::string& store_uri, const std::string& prefix);

// Joins a root prefix ("" or "a/b") and a key with exactly one '/'.
std::string JoinKey(const std::string& root, const std::string& key);

}  // namespace cohort::checkpoint::internal
