#include "examples/gpt/corpus.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"

namespace cohort::examples {

std::vector<uint8_t> LoadFortunes(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (!it->is_regular_file() || p.extension() == ".dat" || p.extension() == ".u8") continue;
    files.push_back(p);
  }
  std::sort(files.begin(), files.end());
  std::vector<uint8_t> text;
  for (const fs::path& p : files) {
    std::ifstream in(p, std::ios::binary);
    text.insert(text.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  for (uint8_t& c : text) {
    if (c >= kCharVocab) c = '?';
  }
  if (text.empty()) {
    throw InvalidArgument(fmt::format(
        "gpt: no fortune text in {}; install Debian's fortunes package (apt-get install "
        "fortunes) or pass --data DIR",
        dir));
  }
  return text;
}

size_t WindowCount(size_t corpus_size, int64_t context) {
  if (context < 1 || corpus_size < static_cast<size_t>(context) + 1) return 0;
  return (corpus_size - 1) / static_cast<size_t>(context);
}

}  // namespace cohort::examples
