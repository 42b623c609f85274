// Lower-case hex text of bytes, and fresh random hex (tokens, run ids). One place for both: the
// checkpoint digests, S3 signatures and ETags, the launcher's tokens and `cohort render`'s
// Secrets all spell bytes this way.
#pragma once

#include <cstddef>
#include <string>

namespace cohort {

// Two lower-case hex digits per byte, most significant nibble first ("00ff10").
std::string Hex(const void* bytes, size_t n);

// `bytes` bytes from std::random_device as 2 * bytes hex digits. Throws Unavailable when the
// machine has no random source.
std::string RandomHex(int bytes);

}  // namespace cohort
