#include "tests/serving/serving_test_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/util/subprocess.h"

namespace cohort::serving::testing {

std::string TempDir(const std::string& name) {
  static std::atomic<int> n{0};
  const std::string dir =
      "/tmp/cohort-serving-" + std::to_string(getpid()) + "-" + name + "-" + std::to_string(n++);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<float> PythonOutputs(const std::string& model_path, const std::vector<float>& input,
                                 const std::vector<int64_t>& shape) {
  const std::string dir = TempDir("py");
  WriteFile(dir + "/in.f32",
            std::string(reinterpret_cast<const char*>(input.data()), input.size() * sizeof(float)));
  std::string dims;
  for (int64_t d : shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
  cohort::testing::Subprocess p({COHORT_TORCH_PYTHON, COHORT_SERVING_TEST_DIR "/jit_outputs.py",
                                 model_path, dir + "/in.f32", dims, dir + "/out.f32"},
                                {});
  auto r = p.Wait(std::chrono::seconds(120));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (r.exit_code != 0) return {};
  const std::string bytes = ReadFile(dir + "/out.f32");
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  std::filesystem::remove_all(dir);
  return out;
}

std::string ValidateInferenceService(const std::string& yaml) {
  const std::string dir = TempDir("isvc");
  WriteFile(dir + "/isvc.yaml", yaml);
  cohort::testing::Subprocess p({COHORT_SCHEMA_PYTHON, COHORT_SERVING_TEST_DIR "/validate_isvc.py",
                                 COHORT_SHARED_SCHEMAS, dir + "/isvc.yaml"},
                                {});
  auto r = p.Wait(std::chrono::seconds(120));
  std::filesystem::remove_all(dir);
  return r.exit_code == 0 ? "" : "exit " + std::to_string(r.exit_code) + ": " + r.output;
}

int Lines(const std::string& text) {
  int lines = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' || i + 1 == text.size()) ++lines;
  }
  return lines;
}

std::string SkeletonPath() { return cohort::testing::BinPath("skeletons/fashion_cnn.pt"); }

}  // namespace cohort::serving::testing
