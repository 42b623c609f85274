#include "checkpoint/digest.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <xxhash.h>

#include "common/error.h"
#include "common/hex.h"

namespace cohort::checkpoint {
namespace {


class Xxh3Hasher : public Hasher {
 public:
  Xxh3Hasher() : state_(XXH3_createState()) {
    if (state_ == nullptr) throw Unavailable("out of memory creating an XXH3 state");
    XXH3_128bits_reset(state_);
  }
  ~Xxh3Hasher() override { XXH3_freeState(state_); }
  void Update(const void* data, size_t size) override {
    if (size > 0) XXH3_128bits_update(state_, data, size);
  }
  std::string Finish() override {
    XXH128_canonical_t canonical;  // big-endian, the form xxhsum prints
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_));
    return std::string("xxh3-128:") + Hex(canonical.digest, sizeof(canonical.digest));
  }

 private:
  XXH3_state_t* state_;
};

class Sha256Hasher : public Hasher {
 public:
  Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      EVP_MD_CTX_free(ctx_);
      throw Internal("EVP_DigestInit_ex(sha256) failed");
    }
  }
  ~Sha256Hasher() override { EVP_MD_CTX_free(ctx_); }
  void Update(const void* data, size_t size) override {
    if (size > 0 && EVP_DigestUpdate(ctx_, data, size) != 1) {
      throw Internal("EVP_DigestUpdate(sha256) failed");
    }
  }
  std::string Finish() override {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx_, md, &n) != 1) throw Internal("EVP_DigestFinal_ex failed");
    return std::string("sha256:") + Hex(md, n);
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

const char* DigestAlgorithmName(DigestAlgorithm algorithm) {
  return algorithm == DigestAlgorithm::kSha256 ? "sha256" : "xxh3-128";
}

DigestAlgorithm ParseDigestAlgorithm(const std::string& name) {
  if (name == "xxh3-128" || name == "xxh3") return DigestAlgorithm::kXxh3_128;
  if (name == "sha256" || name == "sha-256") return DigestAlgorithm::kSha256;
  throw InvalidArgument(
      fmt::format("unknown digest algorithm '{}'; use xxh3-128 (default) or sha256", name));
}

DigestAlgorithm DigestAlgorithmOf(const std::string& digest) {
  const size_t colon = digest.find(':');
  const std::string name = colon == std::string::npos ? "" : digest.substr(0, colon);
  const size_t hex_len = name == "sha256" ? 64 : name == "xxh3-128" ? 32 : 0;
  if (hex_len == 0 || digest.size() != colon + 1 + hex_len ||
      digest.find_first_not_of("0123456789abcdef", colon + 1) != std::string::npos) {
    throw DataLoss(fmt::format(
        "malformed digest '{}': expected xxh3-128:<32 hex digits> or sha256:<64 hex digits>",
        digest));
  }
  return ParseDigestAlgorithm(name);
}

std::unique_ptr<Hasher> NewHasher(DigestAlgorithm algorithm) {
  if (algorithm == DigestAlgorithm::kSha256) return std::make_unique<Sha256Hasher>();
  return std::make_unique<Xxh3Hasher>();
}

std::string Digest(DigestAlgorithm algorithm, const void* data, size_t size) {
  auto hasher = NewHasher(algorithm);
  hasher->Update(data, size);
  return hasher->Finish();
}

}  // namespace cohort::checkpoint
