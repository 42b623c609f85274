#include "examples/fashion_mnist/idx.h"

#include <fmt/format.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>

#include "common/error.h"

namespace cohort::examples {

namespace {

constexpr uint8_t kUnsignedByte = 0x08;

std::string HowToFix() {
  return fmt::format(
      "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist, files "
      "under {}) or pass --data DIR with the *-idx?-ubyte.gz files",
      kFashionMnistDir);
}

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) {
      const int err = errno;
      throw InvalidArgument(fmt::format("cannot open {}: {}; {}", path,
                                        err ? std::strerror(err) : "out of memory", HowToFix()));
    }
    gzbuffer(file_, 1 << 17);  // fewer read() calls for the 26 MB training images
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; returns how many (fewer only at the end). Throws DataLoss on a zlib
  // error (a corrupt or truncated stream).
  size_t Read(void* buf, size_t n) {
    auto* out = static_cast<uint8_t*>(buf);
    size_t done = 0;
    while (done < n) {
      const auto chunk =
          static_cast<unsigned>(std::min<size_t>(n - done, std::numeric_limits<int>::max() / 2));
      const int got = gzread(file_, out + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        throw DataLoss(fmt::format("{} is corrupt ({}: {}); {}", path_,
                                   code == Z_ERRNO ? "read error" : "gzip", msg, Fix()));
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }

  // The same advice for every damaged file: fetch it again.
  std::string Fix() const { return "reinstall dataset-fashion-mnist or replace the file"; }

  // zlib reports a gzip stream cut short only once the end is reached: ask it.
  void CheckComplete() {
    int code = 0;
    const char* msg = gzerror(file_, &code);
    if (code != Z_OK) {
      throw DataLoss(fmt::format("{} is truncated or corrupt ({}); {}", path_, msg, Fix()));
    }
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

uint32_t BigEndian32(const uint8_t* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

}  // namespace

IdxArray ReadIdx(const std::string& path, size_t expected_rank) {
  GzFile file(path);
  // The magic number: two zero bytes, the element type, the number of dimensions.
  uint8_t magic[4];
  if (file.Read(magic, 4) != 4) {
    file.CheckComplete();
    throw DataLoss(
        fmt::format("{} is too short to be an IDX file (under 4 bytes); {}", path, file.Fix()));
  }
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != kUnsignedByte || magic[3] != expected_rank) {
    throw DataLoss(fmt::format(
        "{} is not an IDX file of unsigned bytes with {} dimension(s): its magic number is "
        "0x{:02x}{:02x}{:02x}{:02x}, expected 0x0000{:02x}{:02x}; {}",
        path, expected_rank, unsigned{magic[0]}, unsigned{magic[1]}, unsigned{magic[2]},
        unsigned{magic[3]}, unsigned{kUnsignedByte}, expected_rank, file.Fix()));
  }
  IdxArray a;
  std::vector<uint8_t> header(4 * expected_rank);
  if (file.Read(header.data(), header.size()) != header.size()) {
    file.CheckComplete();
    throw DataLoss(fmt::format("{} is truncated inside its header; {}", path, file.Fix()));
  }
  size_t total = 1;
  for (size_t d = 0; d < expected_rank; ++d) {
    const uint32_t n = BigEndian32(&header[4 * d]);
    a.dims.push_back(n);
    // Fashion-MNIST is 47 MB; anything claiming more than 4 GB is a damaged header, not data.
    if (n != 0 && total > (size_t{1} << 32) / n) {
      throw DataLoss(fmt::format("{} declares an implausible size (dimension {} is {}); {}", path,
                                 d, n, file.Fix()));
    }
    total *= n;
  }
  // One byte more than declared, in the same read: zlib checks the gzip trailer (CRC and length)
  // only while it still has room to write, so a read of exactly the data size would miss a file
  // cut inside its last bytes. It also catches data beyond the declared size.
  a.data.resize(total + 1);
  const size_t got = file.Read(a.data.data(), total + 1);
  if (got < total) {
    file.CheckComplete();
    throw DataLoss(
        fmt::format("{} is truncated: its header declares {} bytes of data, it holds {}; {}", path,
                    total, got, file.Fix()));
  }
  if (got > total) {
    throw DataLoss(fmt::format("{} has data beyond the {} bytes its header declares; {}", path,
                               total, file.Fix()));
  }
  a.data.resize(total);
  file.CheckComplete();
  return a;
}

FashionMnistSplit LoadFashionMnist(const std::string& dir, const std::string& split) {
  if (split != "train" && split != "t10k") {
    throw InvalidArgument(
        fmt::format("unknown Fashion-MNIST split '{}'; use train or t10k", split));
  }
  const std::string images_path = fmt::format("{}/{}-images-idx3-ubyte.gz", dir, split);
  const std::string labels_path = fmt::format("{}/{}-labels-idx1-ubyte.gz", dir, split);
  IdxArray images = ReadIdx(images_path, 3);
  IdxArray labels = ReadIdx(labels_path, 1);
  if (images.dims[0] != labels.dims[0]) {
    throw DataLoss(fmt::format("{} holds {} images but {} holds {} labels; {}", images_path,
                               images.dims[0], labels_path, labels.dims[0],
                               "reinstall dataset-fashion-mnist or use files of one release"));
  }
  if (images.dims[1] != 28 || images.dims[2] != 28) {
    throw DataLoss(fmt::format("{} holds {}x{} images; Fashion-MNIST's are 28x28", images_path,
                               images.dims[1], images.dims[2]));
  }
  FashionMnistSplit s;
  s.count = images.dims[0];
  s.rows = images.dims[1];
  s.cols = images.dims[2];
  s.images = std::move(images.data);
  s.labels = std::move(labels.data);
  for (size_t i = 0; i < s.count; ++i) {
    if (s.labels[i] >= 10) {
      throw DataLoss(fmt::format("{}: label {} of example {} is outside [0, 10)", labels_path,
                                 unsigned{s.labels[i]}, i));
    }
  }
  return s;
}

const char* FashionMnistClassName(int label) {
  static const char* const kNames[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return label >= 0 && label < 10 ? kNames[label] : "?";
}

}  // namespace cohort::examples
