// The Fashion-MNIST IDX reader: Debian's real files, and files the test damages itself
// (truncated, garbled, wrong magic, wrong sizes), each of which must give one clear line.
#include "examples/fashion_mnist/idx.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"

namespace cohort::examples {
namespace {

namespace fs = std::filesystem;

const std::string kDir = kFashionMnistDir;

bool HaveDataset() { return fs::exists(kDir + "/t10k-labels-idx1-ubyte.gz"); }

#define REQUIRE_DATASET() \
  if (!HaveDataset()) GTEST_SKIP() << kDir << " is missing: apt-get install dataset-fashion-mnist"

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Writes bytes gzip-compressed, as the dataset ships.
void WriteGz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::string Be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// An IDX file of unsigned bytes: magic, dims, then payload (which may disagree with dims).
std::string Idx(const std::vector<uint32_t>& dims, const std::string& payload) {
  std::string s = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims) s += Be32(d);
  return s + payload;
}

class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "cohort-idx-XXXXXX").string();
    path_ = ::mkdtemp(templ.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

template <typename E, typename F>
std::string ErrorOf(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "nothing thrown";
  return "";
}

// ---- Debian's files ----

TEST(Idx, ReadsTheRealTrainingAndTestSplits) {
  REQUIRE_DATASET();
  for (const auto& [split, count] : {std::pair<std::string, size_t>{"train", 60000},
                                     std::pair<std::string, size_t>{"t10k", 10000}}) {
    const FashionMnistSplit s = LoadFashionMnist(kDir, split);
    EXPECT_EQ(s.count, count) << split;
    EXPECT_EQ(s.rows, 28u);
    EXPECT_EQ(s.cols, 28u);
    ASSERT_EQ(s.images.size(), count * 28 * 28);
    ASSERT_EQ(s.labels.size(), count);
    // Fashion-MNIST is balanced: every class has exactly a tenth of each split.
    std::array<size_t, 10> per_class{};
    for (uint8_t l : s.labels) ++per_class.at(l);
    for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], count / 10) << split << " class " << c;
    // Real pictures: dark background corners, bright pixels somewhere, a plausible mean.
    double sum = 0;
    for (uint8_t p : s.images) sum += p;
    const double mean = sum / static_cast<double>(s.images.size()) / 255.0;
    EXPECT_NEAR(mean, 0.286, 0.01) << split;
    EXPECT_EQ(s.images[0], 0) << split;
  }
  // The first training label of the official release is 9 (ankle boot); the first test one too.
  EXPECT_EQ(ReadIdx(kDir + "/train-labels-idx1-ubyte.gz", 1).data.at(0), 9);
  EXPECT_STREQ(FashionMnistClassName(9), "Ankle boot");
}

TEST(Idx, MissingFileNamesItAndHowToFix) {
  TempDir dir;
  const std::string msg = ErrorOf<InvalidArgument>([&] { LoadFashionMnist(dir.path(), "train"); });
  EXPECT_TRUE(Has(msg, dir.File("train-images-idx3-ubyte.gz"))) << msg;
  EXPECT_TRUE(Has(msg, "No such file")) << msg;
  EXPECT_TRUE(Has(msg, "dataset-fashion-mnist")) << msg;
  EXPECT_TRUE(Has(msg, "--data DIR")) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(Idx, UnknownSplitIsRefused) {
  const std::string msg = ErrorOf<InvalidArgument>([&] { LoadFashionMnist(kDir, "valid"); });
  EXPECT_TRUE(Has(msg, "use train or t10k")) << msg;
}

// ---- damaged files, made here ----

TEST(Idx, TruncatedGzipIsDataLoss) {
  REQUIRE_DATASET();
  TempDir dir;
  const std::string real = ReadBytes(kDir + "/t10k-images-idx3-ubyte.gz");
  ASSERT_GT(real.size(), 100000u);
  // Cut at several places: inside the gzip header, inside the IDX header, mid-data, at the end.
  // The last cuts lose only the gzip trailer (CRC, length), or that and the end-of-stream code:
  // the data is all there, but unverified.
  for (size_t keep : {size_t{5}, size_t{30}, real.size() / 2, real.size() - 12, real.size() - 9,
                      real.size() - 3}) {
    const std::string path = dir.File("t10k-images-idx3-ubyte.gz");
    WriteBytes(path, real.substr(0, keep));
    const std::string msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 3); });
    EXPECT_TRUE(Has(msg, path)) << keep << ": " << msg;
    EXPECT_TRUE(Has(msg, "truncated") || Has(msg, "too short") || Has(msg, "corrupt"))
        << keep << ": " << msg;
    EXPECT_TRUE(Has(msg, "reinstall dataset-fashion-mnist")) << msg;
  }
}

TEST(Idx, GarbledGzipIsDataLoss) {
  REQUIRE_DATASET();
  TempDir dir;
  std::string bytes = ReadBytes(kDir + "/t10k-labels-idx1-ubyte.gz");
  // Overwrite a stretch of the deflate stream: either inflate fails or the CRC does not match.
  for (size_t i = 100; i < 200 && i < bytes.size(); ++i)
    bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  const std::string path = dir.File("labels.gz");
  WriteBytes(path, bytes);
  const std::string msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 1); });
  EXPECT_TRUE(Has(msg, path)) << msg;
  EXPECT_TRUE(Has(msg, "corrupt")) << msg;
}

TEST(Idx, WrongMagicNumbers) {
  TempDir dir;
  const std::string path = dir.File("x.gz");
  // Images read as labels (3 dimensions where 1 is expected).
  WriteGz(path, Idx({2, 28, 28}, std::string(2 * 28 * 28, '\0')));
  std::string msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 1); });
  EXPECT_TRUE(Has(msg, "magic number is 0x00000803, expected 0x00000801")) << msg;
  // A float IDX file (type 0x0d).
  WriteGz(path, std::string{0, 0, 0x0d, 1} + Be32(1) + std::string(4, '\0'));
  msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 1); });
  EXPECT_TRUE(Has(msg, "not an IDX file of unsigned bytes")) << msg;
  // Not IDX at all (and not gzip: zlib reads plain files as they are).
  WriteBytes(path, "<html>404 Not Found</html>");
  msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 1); });
  EXPECT_TRUE(Has(msg, "magic number is 0x3c68746d")) << msg;
}

TEST(Idx, SizesMustMatchTheHeader) {
  TempDir dir;
  const std::string path = dir.File("x.gz");
  WriteGz(path, Idx({3, 2, 2}, std::string(11, '\1')));  // one byte short
  std::string msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Has(msg, "truncated: its header declares 12 bytes of data, it holds 11")) << msg;
  WriteGz(path, Idx({3, 2, 2}, std::string(13, '\1')));  // one byte too many
  msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Has(msg, "data beyond the 12 bytes")) << msg;
  WriteGz(path, std::string{0, 0, 0x08, 3} + Be32(3));  // header cut inside the dimensions
  msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Has(msg, "truncated inside its header")) << msg;
  WriteGz(path, "");  // empty
  msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 1); });
  EXPECT_TRUE(Has(msg, "too short to be an IDX file")) << msg;
  WriteGz(path, Idx({65536, 65536, 65536}, ""));  // absurd header
  msg = ErrorOf<DataLoss>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Has(msg, "implausible size")) << msg;
}

TEST(Idx, ZeroLengthAndPrimeLengthArraysRead) {
  TempDir dir;
  const std::string path = dir.File("x.gz");
  WriteGz(path, Idx({0}, ""));
  EXPECT_TRUE(ReadIdx(path, 1).data.empty());
  std::string payload;
  for (int i = 0; i < 7 * 13; ++i) payload += static_cast<char>(i);
  WriteGz(path, Idx({7, 13}, payload));
  const IdxArray a = ReadIdx(path, 2);
  EXPECT_EQ(a.dims, (std::vector<uint32_t>{7, 13}));
  ASSERT_EQ(a.data.size(), 91u);
  EXPECT_EQ(a.data[90], 90);
  // An uncompressed IDX file reads the same (zlib passes plain files through).
  WriteBytes(path, Idx({7, 13}, payload));
  EXPECT_EQ(ReadIdx(path, 2).data, a.data);
}

TEST(Idx, SplitsWhoseFilesDisagreeAreRefused) {
  TempDir dir;
  WriteGz(dir.File("train-images-idx3-ubyte.gz"), Idx({3, 28, 28}, std::string(3 * 784, '\0')));
  WriteGz(dir.File("train-labels-idx1-ubyte.gz"), Idx({2}, std::string{1, 2}));
  std::string msg = ErrorOf<DataLoss>([&] { LoadFashionMnist(dir.path(), "train"); });
  EXPECT_TRUE(Has(msg, "holds 3 images but")) << msg;
  EXPECT_TRUE(Has(msg, "holds 2 labels")) << msg;
  WriteGz(dir.File("train-labels-idx1-ubyte.gz"), Idx({3}, std::string{1, 2, 10}));
  msg = ErrorOf<DataLoss>([&] { LoadFashionMnist(dir.path(), "train"); });
  EXPECT_TRUE(Has(msg, "label 10 of example 2 is outside [0, 10)")) << msg;
  WriteGz(dir.File("train-images-idx3-ubyte.gz"), Idx({3, 32, 32}, std::string(3 * 1024, '\0')));
  WriteGz(dir.File("train-labels-idx1-ubyte.gz"), Idx({3}, std::string{1, 2, 3}));
  msg = ErrorOf<DataLoss>([&] { LoadFashionMnist(dir.path(), "train"); });
  EXPECT_TRUE(Has(msg, "holds 32x32 images")) << msg;
  // A well-formed tiny split loads.
  WriteGz(dir.File("train-images-idx3-ubyte.gz"), Idx({3, 28, 28}, std::string(3 * 784, '\7')));
  const FashionMnistSplit s = LoadFashionMnist(dir.path(), "train");
  EXPECT_EQ(s.count, 3u);
  EXPECT_EQ(s.labels, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(s.images[3 * 784 - 1], 7);
}

}  // namespace
}  // namespace cohort::examples
