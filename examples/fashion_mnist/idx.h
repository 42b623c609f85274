// Reading (Fashion-)MNIST's IDX files, gzipped as Debian's dataset-fashion-mnist ships them
// (/usr/share/datasets/fashion-mnist/*.gz), straight through zlib: no unpacking step. Every
// header field is checked against the file's real length, so a truncated download or a wrong file
// gives one line naming the file instead of garbage training data. No libtorch here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cohort::examples {

// Where Debian's dataset-fashion-mnist puts the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// An unsigned-byte IDX array: its dimensions and its elements in row-major order.
struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

// Reads a gzipped (or plain) IDX file of unsigned bytes (type 0x08) with expected_rank
// dimensions. Throws InvalidArgument when the file cannot be opened (the message says to
// install dataset-fashion-mnist or pass --data DIR) and DataLoss when it is not IDX, is
// truncated or corrupt, or has bytes beyond its declared size.
IdxArray ReadIdx(const std::string& path, size_t expected_rank);

// One split of Fashion-MNIST: count images of rows x cols bytes, and their labels in [0, 10).
struct FashionMnistSplit {
  size_t count = 0;
  size_t rows = 0;
  size_t cols = 0;
  std::vector<uint8_t> images;  // count * rows * cols
  std::vector<uint8_t> labels;  // count
};

// Reads "<dir>/<split>-images-idx3-ubyte.gz" and "<dir>/<split>-labels-idx1-ubyte.gz", split
// being "train" or "t10k". Throws (as ReadIdx) also when the two files disagree on the count, or
// a label is outside [0, 10).
FashionMnistSplit LoadFashionMnist(const std::string& dir, const std::string& split);

// The ten class names, by label.
const char* FashionMnistClassName(int label);

}  // namespace cohort::examples
