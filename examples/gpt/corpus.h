// The gpt example's text: Debian's `fortunes` package (/usr/share/games/fortunes), read as
// 7-bit characters (a byte >= 128 becomes '?'), the files in name order, so every rank and every
// run sees the same corpus. Torch-free, so tests can use it cheaply.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cohort::examples {

inline constexpr char kFortunesDir[] = "/usr/share/games/fortunes";
inline constexpr int64_t kCharVocab = 128;

// The characters of every fortune file in dir (not the .dat indexes, not the .u8 links), in
// file-name order. Throws InvalidArgument naming dir when it holds no text (fix: apt-get install
// fortunes, or pass --data).
std::vector<uint8_t> LoadFortunes(const std::string& dir = kFortunesDir);

// Training example i of a corpus cut into windows of context + 1 characters (input and the next
// character as target): characters [i * context, i * context + context + 1).
size_t WindowCount(size_t corpus_size, int64_t context);

}  // namespace cohort::examples
