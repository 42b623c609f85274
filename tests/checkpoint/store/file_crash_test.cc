// file:// across a crash: a writer process SIGKILLed at a seeded moment mid-write never leaves
// a partial object under the final name; the previous version stays whole.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "checkpoint/store/file_store.h"
#include "tests/checkpoint/store/store_test_util.h"
#include "tests/util/subprocess.h"

namespace cohort::checkpoint::testing {
namespace {

using cohort::testing::BinPath;
using cohort::testing::Subprocess;

std::string Expected(int mib) {
  std::string out;
  std::string chunk(1 << 20, '\0');
  for (int i = 0; i < mib; ++i) {
    for (size_t j = 0; j < chunk.size(); ++j) chunk[j] = static_cast<char>('a' + (i + j) % 26);
    out += chunk;
  }
  return out;
}

// The temp files (hidden from List()) in dir.
int CountTemps(const std::string& dir) {
  int temps = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind(FileObjectStore::kTempPrefix, 0) == 0) ++temps;
    ::closedir(d);
  }
  return temps;
}

TEST(FileCrash, KilledWriterNeverLeavesAPartialObject) {
  TempDir dir;
  const std::string uri = "file://" + dir.path();
  FileObjectStore store(dir.path());
  const std::string old_content = "previous complete version";
  store.Put("run/obj", old_content);
  std::mt19937 rng(20240605);
  const int kMiB = 24;
  for (int trial = 0; trial < 6; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    Subprocess child({BinPath("store_writer_child"), uri, "run/obj", std::to_string(kMiB), "20"},
                     {});
    // Kill after a seeded number of chunks: always mid-write, before the commit.
    int after = static_cast<int>(rng() % (kMiB - 8));  // 8 chunks (160 ms) to spare
    ASSERT_TRUE(child.AwaitLine("WRITING " + std::to_string(after), std::chrono::seconds(20)))
        << child.Output();
    child.Kill(SIGKILL);
    auto result = child.Wait(std::chrono::seconds(10));
    EXPECT_EQ(result.signal, SIGKILL) << result.output;
    EXPECT_EQ(result.output.find("COMMITTED"), std::string::npos);
    // The final name holds the old object, whole; the partial bytes are only in a hidden temp
    // file that List() does not show.
    EXPECT_EQ(store.Get("run/obj").value(), old_content);
    auto listed = store.List("");
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].key, "run/obj");
    EXPECT_EQ(listed[0].size, old_content.size());
  }
  // Each writer removed what the one killed before it left; the last one's temp is still there.
  EXPECT_EQ(CountTemps(dir.path() + "/run"), 1);

  // Not killed: the new object replaces the old one, whole.
  Subprocess child({BinPath("store_writer_child"), uri, "run/obj", "3", "0"}, {});
  auto result = child.Wait(std::chrono::seconds(20));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("COMMITTED"), std::string::npos);
  EXPECT_TRUE(store.Get("run/obj").value() == Expected(3));
  EXPECT_EQ(CountTemps(dir.path() + "/run"), 0);
}

// A store opened over a folder removes the temps of writers that died, anywhere below it, and
// never those of a writer still running.
TEST(FileCrash, OpeningTheStoreRemovesOnlyDeadWritersTemps) {
  TempDir dir;
  const std::string uri = "file://" + dir.path();
  for (const char* key : {"a/obj", "b/c/obj"}) {
    Subprocess child({BinPath("store_writer_child"), uri, key, "16", "20"}, {});
    ASSERT_TRUE(child.AwaitLine("WRITING 2", std::chrono::seconds(20))) << child.Output();
    child.Kill(SIGKILL);
    EXPECT_EQ(child.Wait(std::chrono::seconds(10)).signal, SIGKILL);
  }
  // The second writer's store, opened over the root, removed the first one's temp in a/.
  EXPECT_EQ(CountTemps(dir.path() + "/a"), 0);
  ASSERT_EQ(CountTemps(dir.path() + "/b/c"), 1);
  // A writer alive and mid-write: its temp stays while stores are opened around it.
  Subprocess live({BinPath("store_writer_child"), uri, "a/live", "40", "50"}, {});
  ASSERT_TRUE(live.AwaitLine("WRITING 1", std::chrono::seconds(20))) << live.Output();
  EXPECT_EQ(CountTemps(dir.path() + "/b/c"), 0);  // removed when `live` opened the store
  FileObjectStore reopened(dir.path());
  EXPECT_EQ(CountTemps(dir.path() + "/a"), 1);  // the live writer's
  // Another host's temp (shared file systems) is never judged from here.
  const std::string foreign =
      dir.path() + "/a/" + FileObjectStore::kTempPrefix + "obj.other-host.99999999.0";
  std::FILE* f = std::fopen(foreign.c_str(), "w");
  ASSERT_TRUE(f != nullptr);
  std::fclose(f);
  live.Kill(SIGKILL);
  live.Wait(std::chrono::seconds(10));
  FileObjectStore again(dir.path());
  EXPECT_EQ(CountTemps(dir.path() + "/a"), 1);  // only the foreign one
  EXPECT_EQ(again.List("").size(), 0u);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
