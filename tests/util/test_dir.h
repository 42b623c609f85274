// A fresh folder for one test case: /tmp/cohort-<prefix>-<pid>-<test name>, emptied when made
// and removed when the test passes (kept for a look when it fails). Header-only.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace cohort::testing {

class TestDir {
 public:
  explicit TestDir(const std::string& prefix)
      : path_(std::filesystem::temp_directory_path() /
              ("cohort-" + prefix + "-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TestDir() {
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(path_);
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // path/name as a string, and as a file:// URI.
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  std::string Uri(const std::string& name) const { return "file://" + File(name); }

 private:
  std::filesystem::path path_;
};

}  // namespace cohort::testing
