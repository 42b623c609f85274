// memory:// and file:// through the conformance suite, URI parsing, and file:// specifics.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <random>

#include "checkpoint/store/disk_flusher.h"
#include "checkpoint/store/file_store.h"
#include "checkpoint/store/memory_store.h"
#include "common/error.h"
#include "tests/checkpoint/store/store_conformance.h"
#include "tests/checkpoint/store/store_test_util.h"
#include "tests/util/scoped_env.h"

namespace cohort::checkpoint::testing {
namespace {

StoreBackend MemoryBackend() {
  return {"memory", [] {
            static std::atomic<int> counter{0};
            return std::unique_ptr<ObjectStore>(
                std::make_unique<MemoryObjectStore>("conformance-" + std::to_string(counter++)));
          }};
}

StoreBackend FileBackend() {
  return {"file", [] {
            // One temp dir per test, removed when the test binary exits.
            static std::vector<std::unique_ptr<TempDir>> dirs;
            dirs.push_back(std::make_unique<TempDir>());
            return OpenObjectStore("file://" + dirs.back()->path() + "/root");
          }};
}

INSTANTIATE_TEST_SUITE_P(Local, StoreConformance, ::testing::Values(MemoryBackend(), FileBackend()),
                         [](const auto& info) { return info.param.name; });

TEST(OpenObjectStore, AcceptedForms) {
  TempDir dir;
  EXPECT_EQ(OpenObjectStore("file://" + dir.path())->Uri(), "file://" + dir.path());
  EXPECT_EQ(OpenObjectStore("file://" + dir.path() + "/")->Uri(), "file://" + dir.path());
  EXPECT_EQ(OpenObjectStore(dir.path() + "/plain")->Uri(), "file://" + dir.path() + "/plain");
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  EXPECT_EQ(OpenObjectStore("relative/dir")->Uri(), "file://" + std::string(cwd) + "/relative/dir");
  EXPECT_EQ(OpenObjectStore("memory://abc")->Uri(), "memory://abc");
}

TEST(OpenObjectStore, RejectsOtherForms) {
  for (std::string uri : {"http://host/x", "gs://bucket/x", "", "file://relative/dir", "file://"}) {
    SCOPED_TRACE(uri);
    try {
      OpenObjectStore(uri);
      FAIL() << "accepted";
    } catch (const InvalidArgument& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("file:///"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  try {
    OpenObjectStore("gs://bucket/x");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("s3://bucket/prefix"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("memory://name"), std::string::npos) << e.what();
  }
}

TEST(MemoryStore, SameNameSharesObjects) {
  MemoryObjectStore a("shared-name"), b("shared-name"), c("other-name");
  a.Put("k", std::string("v"));
  EXPECT_EQ(b.Get("k").value(), "v");
  EXPECT_FALSE(c.Get("k").has_value());
  ClearMemoryStore("shared-name");
  EXPECT_FALSE(a.Get("k").has_value());
}

TEST(MemoryStore, APathUnderTheNameIsAFolderOfItsObjects) {
  ClearMemoryStore("folders");
  MemoryObjectStore root("folders"), run("folders/run7/"), other("folders/run8");
  EXPECT_EQ(run.Uri(), "memory://folders/run7");
  run.Put("step-1/a", std::string("A"));
  other.Put("b", std::string("B"));
  EXPECT_EQ(root.Get("run7/step-1/a").value(), "A");
  EXPECT_EQ(run.Get("step-1/a").value(), "A");
  EXPECT_EQ(run.Head("step-1/a")->key, "step-1/a");
  EXPECT_EQ(run.GetRange("step-1/a", 0, 1), "A");
  EXPECT_FALSE(run.Get("b").has_value());
  ASSERT_EQ(run.List("").size(), 1u);
  EXPECT_EQ(run.List("")[0].key, "step-1/a");
  EXPECT_EQ(root.List("").size(), 2u);
  ClearMemoryStore("folders/run7");  // that folder only
  EXPECT_FALSE(root.Get("run7/step-1/a").has_value());
  EXPECT_EQ(root.Get("run8/b").value(), "B");
  run.Put("c", std::string("C"));
  run.Delete("c");
  EXPECT_TRUE(root.List("run7/").empty());
}

std::vector<std::string> DirEntries(const std::string& path) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
        names.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(FileStore, LayoutIsPlainFilesAndDirsAreCleanedUp) {
  TempDir dir;
  FileObjectStore store(dir.path());
  store.Put("run/step-1/rank-0.h5", std::string("abc"));
  std::ifstream in(dir.path() + "/run/step-1/rank-0.h5", std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "abc");
  EXPECT_EQ(DirEntries(dir.path() + "/run/step-1"), std::vector<std::string>{"rank-0.h5"});
  {
    auto writer = store.NewWriter("run/step-1/rank-1.h5");
    writer->Write("partial", 7);
    // While it is open, only a hidden temp file exists, and List() does not show it.
    auto names = DirEntries(dir.path() + "/run/step-1");
    ASSERT_EQ(names.size(), 2u);
    EXPECT_EQ(names[0].rfind(FileObjectStore::kTempPrefix, 0), 0u) << names[0];
    EXPECT_EQ(store.List("").size(), 1u);
  }
  EXPECT_EQ(DirEntries(dir.path() + "/run/step-1"), std::vector<std::string>{"rank-0.h5"});
  store.Delete("run/step-1/rank-0.h5");
  EXPECT_EQ(DirEntries(dir.path()), std::vector<std::string>{});  // empty dirs removed
  EXPECT_THROW(store.Put(std::string(FileObjectStore::kTempPrefix) + "x", std::string("y")),
               InvalidArgument);
}

TEST(FileStore, ErrorsNameThePath) {
  TempDir dir;
  // A file where a directory is needed.
  FileObjectStore store(dir.path());
  store.Put("blocker", std::string("x"));
  try {
    store.Put("blocker/child", std::string("y"));
    FAIL() << "wrote under a file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path() + "/blocker"), std::string::npos) << e.what();
  }
  // An unwritable root (root ignores permissions, so use a path under a regular file instead).
  FileObjectStore bad(dir.path() + "/blocker/root");
  try {
    bad.Put("k", std::string("v"));
    FAIL() << "wrote under a file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path() + "/blocker"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(bad.Get("k").has_value());
  EXPECT_TRUE(bad.List("").empty());
}

// 150 MiB written in pieces of odd sizes: past the 16 MiB writeback steps and the 128 MiB point
// where the background fdatasync starts, the object reads back byte for byte, and an aborted
// writer of the same size leaves nothing behind.
TEST(FileStore, LargeObjectsWithBackgroundFlushRoundTrip) {
  TempDir dir;
  FileObjectStore store(dir.path());
  std::string data(150u << 20, '\0');
  std::mt19937_64 rng(7);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  {
    auto writer = store.NewWriter("big/object");
    size_t off = 0;
    for (size_t piece = 1; off < data.size(); piece = piece * 7 + 9973) {
      const size_t n = std::min(data.size() - off, piece % (40u << 20) + 1);
      writer->Write(data.data() + off, n);
      off += n;
    }
    writer->Commit();
  }
  const auto back = store.Get("big/object");
  ASSERT_TRUE(back.has_value());
  ASSERT_EQ(back->size(), data.size());
  EXPECT_TRUE(*back == data) << "the object read back differs from what was written";
  {
    auto writer = store.NewWriter("big/aborted");
    writer->Write(data.data(), data.size());
  }  // destroyed without Commit(): the flusher thread stops, the temp file goes
  EXPECT_FALSE(store.Head("big/aborted").has_value());
  EXPECT_EQ(DirEntries(dir.path() + "/big"), std::vector<std::string>{"object"});
}

// A failed fdatasync is reported by Stop(), naming the file: a pipe cannot be synced.
TEST(DiskFlusher, ReportsAFailedFlush) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  {
    DiskFlusher flusher(fds[1], "/ckpt/shard.h5", 1);
    flusher.Written(10);
    try {
      flusher.Stop();
      // Stop() may win the race with the thread's first flush: then nothing failed yet.
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("/ckpt/shard.h5: fdatasync() failed"), std::string::npos)
          << e.what();
    }
  }
  {
    DiskFlusher flusher(fds[1], "/ckpt/shard.h5", 1);
    flusher.Written(10);
    ::usleep(200 * 1000);  // the thread has flushed (and failed) by now
    try {
      flusher.Stop();
      FAIL() << "a failed fdatasync went unreported";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("/ckpt/shard.h5: fdatasync() failed"), std::string::npos)
          << e.what();
    }
    EXPECT_NO_THROW(flusher.Stop());  // reported once
  }
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
