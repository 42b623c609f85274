// Every backend: roundtrips of awkward sizes, ranges, listing, odd keys, deletes, aborted writers.
#include "tests/checkpoint/store/store_conformance.h"

#include <algorithm>
#include <set>
#include <thread>
#include <vector>

#include "common/error.h"
#include "tests/checkpoint/store/store_test_util.h"

namespace cohort::checkpoint::testing {
namespace {

std::vector<std::string> Keys(const std::vector<ObjectInfo>& infos) {
  std::vector<std::string> keys;
  for (const auto& i : infos) keys.push_back(i.key);
  return keys;
}

TEST_P(StoreConformance, RoundTripOfAwkwardSizes) {
  const size_t kMiB = 1u << 20;
  std::vector<size_t> sizes = {0, 1, 7919, 8 * kMiB, 8 * kMiB + 1, 40 * kMiB + 13};
  for (size_t size : sizes) {
    if (size > GetParam().max_object) continue;
    SCOPED_TRACE("size " + std::to_string(size));
    const std::string data = Payload(size, size);
    const std::string key = "sizes/obj-" + std::to_string(size);
    // Stream it in uneven chunks that straddle part boundaries.
    auto writer = store_->NewWriter(key);
    size_t chunk = kMiB + 4093;
    for (size_t off = 0; off < size; off += chunk)
      writer->Write(data.data() + off, std::min(chunk, size - off));
    writer->Commit();
    auto got = store_->Get(key);
    ASSERT_TRUE(got.has_value());
    ASSERT_EQ(got->size(), size);
    EXPECT_TRUE(*got == data) << "content differs";
    auto head = store_->Head(key);
    ASSERT_TRUE(head.has_value());
    EXPECT_EQ(head->size, size);
    EXPECT_EQ(head->key, key);
  }
  // Put() of a whole buffer, overwriting an existing object.
  store_->Put("sizes/obj-1", std::string("replaced"));
  EXPECT_EQ(store_->Get("sizes/obj-1").value(), "replaced");
}

TEST_P(StoreConformance, GetRange) {
  const std::string data = Payload(100003, 7);
  store_->Put("range/obj", data);
  EXPECT_EQ(store_->GetRange("range/obj", 0, 10), data.substr(0, 10));
  EXPECT_EQ(store_->GetRange("range/obj", 4099, 65537), data.substr(4099, 65537));
  EXPECT_EQ(store_->GetRange("range/obj", 100000, 100), data.substr(100000));  // short at end
  EXPECT_EQ(store_->GetRange("range/obj", 0, 1u << 30), data);
  EXPECT_EQ(store_->GetRange("range/obj", 100002, 1), data.substr(100002));
  EXPECT_EQ(store_->GetRange("range/obj", 100003, 5), "");  // at the end
  EXPECT_EQ(store_->GetRange("range/obj", 200000, 5), "");  // past the end
  EXPECT_EQ(store_->GetRange("range/obj", 17, 0), "");
  store_->Put("range/empty", std::string());
  EXPECT_EQ(store_->GetRange("range/empty", 0, 10), "");
  try {
    store_->GetRange("range/missing", 0, 10);
    FAIL() << "GetRange of a missing object returned";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("range/missing"), std::string::npos) << e.what();
  }
}

TEST_P(StoreConformance, MissingObjects) {
  EXPECT_FALSE(store_->Get("nothing/here").has_value());
  EXPECT_FALSE(store_->Head("nothing/here").has_value());
  EXPECT_TRUE(store_->List("").empty());
  EXPECT_TRUE(store_->List("nothing/").empty());
  store_->Delete("nothing/here");  // not an error
}

TEST_P(StoreConformance, ListByPrefix) {
  const std::vector<std::string> all = {"a/1", "a/2", "a/b/3", "ab", "b", "a/b/c/4"};
  for (size_t i = 0; i < all.size(); ++i) store_->Put(all[i], std::string(i + 1, 'x'));
  auto listed = store_->List("");
  EXPECT_EQ(Keys(listed), (std::vector<std::string>{"a/1", "a/2", "a/b/3", "a/b/c/4", "ab", "b"}));
  for (const auto& info : listed) {
    size_t index = std::find(all.begin(), all.end(), info.key) - all.begin();
    EXPECT_EQ(info.size, index + 1) << info.key;
  }
  EXPECT_EQ(Keys(store_->List("a/")), (std::vector<std::string>{"a/1", "a/2", "a/b/3", "a/b/c/4"}));
  EXPECT_EQ(Keys(store_->List("a")),
            (std::vector<std::string>{"a/1", "a/2", "a/b/3", "a/b/c/4", "ab"}));
  EXPECT_EQ(Keys(store_->List("a/b")), (std::vector<std::string>{"a/b/3", "a/b/c/4"}));
  EXPECT_EQ(Keys(store_->List("a/b/c/4")), (std::vector<std::string>{"a/b/c/4"}));
  EXPECT_TRUE(store_->List("zz").empty());
  EXPECT_TRUE(store_->List("a/b/c/44").empty());
}

TEST_P(StoreConformance, ManyKeysFromThreads) {
  const int n = GetParam().many_keys;
  // Four threads share the store: it must be safe to use concurrently.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = t; i < n; i += 4)
        store_->Put("many/k" + std::to_string(100000 + i), std::to_string(i));
    });
  for (auto& t : threads) t.join();
  auto listed = store_->List("many/");
  ASSERT_EQ(listed.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(listed[i].key, "many/k" + std::to_string(100000 + i));
    EXPECT_EQ(listed[i].size, std::to_string(i).size());
  }
  EXPECT_EQ(store_->List("many/k10000").size(), 10u);  // k100000 .. k100009
  EXPECT_EQ(store_->Get("many/k" + std::to_string(100000 + n - 1)).value(), std::to_string(n - 1));
}

TEST_P(StoreConformance, OddCharactersInKeys) {
  const std::vector<std::string> keys = {
      "odd/with space", "odd/plus+sign",      "odd/unicode-\xc3\xbc\xc3\xa9-\xe2\x82\xac",
      "odd/amp&lt<gt>", "odd/quote\"apos'",   "odd/percent%20x",
      "odd/q?h#eq=",    "odd/tilde~star*(1)", "odd/colon:semi;comma,at@dollar$"};
  for (size_t i = 0; i < keys.size(); ++i) store_->Put(keys[i], Payload(i * 11, i));
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(Keys(store_->List("odd/")), sorted);
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(store_->Get(keys[i]).value(), Payload(i * 11, i)) << keys[i];
    EXPECT_EQ(store_->Head(keys[i]).value().size, i * 11) << keys[i];
  }
  EXPECT_EQ(Keys(store_->List("odd/with ")), std::vector<std::string>{"odd/with space"});
  EXPECT_EQ(Keys(store_->List("odd/plus+")), std::vector<std::string>{"odd/plus+sign"});
  store_->Delete("odd/plus+sign");
  EXPECT_FALSE(store_->Get("odd/plus+sign").has_value());
  EXPECT_EQ(store_->List("odd/").size(), keys.size() - 1);
}

TEST_P(StoreConformance, Delete) {
  store_->Put("del/a/x", std::string("1"));
  store_->Put("del/a/y", std::string("2"));
  store_->Put("del/b", std::string("3"));
  store_->Delete("del/a/x");
  EXPECT_FALSE(store_->Get("del/a/x").has_value());
  EXPECT_FALSE(store_->Head("del/a/x").has_value());
  EXPECT_EQ(Keys(store_->List("del/")), (std::vector<std::string>{"del/a/y", "del/b"}));
  store_->Delete("del/a/y");
  store_->Delete("del/a/y");  // twice: still fine
  EXPECT_EQ(Keys(store_->List("del/")), std::vector<std::string>{"del/b"});
  // A key can be written again after its directory went away.
  store_->Put("del/a/x", std::string("again"));
  EXPECT_EQ(store_->Get("del/a/x").value(), "again");
}

TEST_P(StoreConformance, UncommittedWriterLeavesNothing) {
  store_->Put("abort/kept", std::string("old"));
  {
    auto writer = store_->NewWriter("abort/new");
    std::string chunk = Payload(3u << 20, 1);
    for (int i = 0; i < 7; ++i) writer->Write(chunk.data(), chunk.size());  // 21 MiB
  }
  {
    auto writer = store_->NewWriter("abort/kept");  // replacing, then abandoned
    writer->Write("new", 3);
  }
  EXPECT_FALSE(store_->Get("abort/new").has_value());
  EXPECT_EQ(store_->Get("abort/kept").value(), "old");
  EXPECT_EQ(Keys(store_->List("")), std::vector<std::string>{"abort/kept"});
}

TEST_P(StoreConformance, WriterUsedAfterCommitThrows) {
  auto writer = store_->NewWriter("done/x");
  writer->Write("abc", 3);
  writer->Commit();
  EXPECT_THROW(writer->Write("d", 1), Error);
  EXPECT_THROW(writer->Commit(), Error);
  EXPECT_EQ(store_->Get("done/x").value(), "abc");
}

TEST_P(StoreConformance, InvalidKeysAreRefused) {
  for (std::string key : {"", "/abs", "a//b", "a/../b", "./a", "a/", "a/."}) {
    SCOPED_TRACE("key '" + key + "'");
    EXPECT_THROW(store_->Put(key, std::string("x")), InvalidArgument);
    EXPECT_THROW(store_->Get(key), InvalidArgument);
    EXPECT_THROW(store_->Delete(key), InvalidArgument);
  }
  EXPECT_THROW(store_->List("/abs"), InvalidArgument);
  EXPECT_TRUE(store_->List("").empty());
}

}  // namespace
}  // namespace cohort::checkpoint::testing
