// Digests of shard objects, as the manifest records them: "xxh3-128:<32 hex>" (default, ~20
// GB/s) or "sha256:<64 hex>" (when a cryptographic digest is required).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace cohort::checkpoint {

enum class DigestAlgorithm { kXxh3_128, kSha256 };

// "xxh3-128" or "sha256".
const char* DigestAlgorithmName(DigestAlgorithm algorithm);
// Parses a DigestAlgorithmName(). Throws InvalidArgument listing the accepted names.
DigestAlgorithm ParseDigestAlgorithm(const std::string& name);
// The algorithm of a digest string ("sha256:ab..."). Throws DataLoss when it is malformed.
DigestAlgorithm DigestAlgorithmOf(const std::string& digest);

// Streaming digest: Update() any number of times, then Finish() once.
class Hasher {
 public:
  virtual ~Hasher() = default;
  virtual void Update(const void* data, size_t size) = 0;
  // "<algorithm>:<lower-case hex>".
  virtual std::string Finish() = 0;
};

std::unique_ptr<Hasher> NewHasher(DigestAlgorithm algorithm);

// The digest of one buffer.
std::string Digest(DigestAlgorithm algorithm, const void* data, size_t size);

}  // namespace cohort::checkpoint
