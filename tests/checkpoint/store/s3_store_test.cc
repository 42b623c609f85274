// s3:// against a real S3 API server (moto, signatures checked), with awscli as the independent
// reader: conformance, multipart, aborted uploads, credentials, missing bucket, unreachable and
// stalled endpoints, and a proxy that fails 30% of requests.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "checkpoint/store/s3_object_store.h"
#include "common/error.h"
#include "common/net.h"
#include "tests/checkpoint/moto_fixture.h"
#include "tests/checkpoint/store/fault_proxy.h"
#include "tests/checkpoint/store/store_conformance.h"
#include "tests/checkpoint/store/store_test_util.h"

namespace cohort::checkpoint::testing {
namespace {

using cohort::testing::MotoServer;

constexpr size_t kMiB = 1u << 20;

StoreBackend S3Backend() {
  return {"s3", []() -> std::unique_ptr<ObjectStore> {
            MotoServer* moto = MotoServer::Shared();
            if (moto == nullptr) return nullptr;
            moto->ExportEnv();
            return OpenObjectStore(moto->FreshUri("conformance"));
          }};
}

INSTANTIATE_TEST_SUITE_P(Moto, StoreConformance, ::testing::Values(S3Backend()),
                         [](const auto& info) { return info.param.name; });

S3Options OptionsFor(const MotoServer& moto) {
  S3Options o;
  o.endpoint = moto.endpoint();
  o.region = moto.region();
  o.access_key_id = moto.access_key_id();
  o.secret_access_key = moto.secret_access_key();
  return o;
}

// The part of "s3://bucket/prefix" after the bucket.
std::string PrefixOf(const std::string& uri, const MotoServer& moto) {
  return uri.substr(std::string("s3://").size() + moto.bucket().size() + 1);
}

TEST(S3Store, AwscliReadsWhatWeWrote) {
  COHORT_REQUIRE_MOTO(moto);
  const std::string uri = moto->FreshUri("awscli");
  auto store = OpenS3ObjectStore(uri, OptionsFor(*moto));
  std::map<std::string, std::string> written;
  for (size_t size : {size_t{0}, size_t{1}, size_t{7919}, 8 * kMiB, 8 * kMiB + 1, 17 * kMiB + 5})
    written["size-" + std::to_string(size)] = Payload(size, size + 1);
  written["odd/with space+plus \xc3\xbc\xe2\x82\xac"] = "odd key";
  for (const auto& [key, data] : written) store->Put(key, data);

  // One `aws s3 cp --recursive` fetches everything, byte for byte.
  auto fetched = moto->AwsGetAll(PrefixOf(uri, *moto));
  ASSERT_EQ(fetched.size(), written.size());
  for (const auto& [key, data] : written) {
    ASSERT_TRUE(fetched.count(key)) << key;
    EXPECT_TRUE(fetched[key] == data) << key << ": awscli got different bytes";
  }
  // Up to part_size a single PUT (plain MD5 ETag); above it multipart ("-<parts>" ETag).
  std::map<std::string, cohort::testing::AwsObject> listed;
  for (const auto& o : moto->AwsList(PrefixOf(uri, *moto) + "/"))
    listed[o.key.substr(PrefixOf(uri, *moto).size() + 1)] = o;
  ASSERT_EQ(listed.size(), written.size());
  for (const auto& [key, data] : written) EXPECT_EQ(listed[key].size, data.size()) << key;
  auto etag = [&](size_t size) { return listed["size-" + std::to_string(size)].etag; };
  EXPECT_EQ(etag(8 * kMiB).find('-'), std::string::npos) << etag(8 * kMiB);
  EXPECT_NE(etag(8 * kMiB + 1).find("-2\""), std::string::npos) << etag(8 * kMiB + 1);
  EXPECT_NE(etag(17 * kMiB + 5).find("-3\""), std::string::npos) << etag(17 * kMiB + 5);
}

TEST(S3Store, AbandonedWriterAbortsItsMultipartUpload) {
  COHORT_REQUIRE_MOTO(moto);
  const std::string uri = moto->FreshUri("abort");
  const std::string prefix = PrefixOf(uri, *moto);
  auto store = OpenS3ObjectStore(uri, OptionsFor(*moto));
  {
    auto writer = store->NewWriter("big");
    std::string chunk = Payload(kMiB, 9);
    for (int i = 0; i < 20; ++i) writer->Write(chunk.data(), chunk.size());  // 2 parts sent
    EXPECT_EQ(moto->PendingMultipartUploads(prefix), 1);  // so the check below means something
  }
  EXPECT_EQ(moto->PendingMultipartUploads(prefix), 0);
  EXPECT_FALSE(store->Head("big").has_value());
  EXPECT_TRUE(store->List("").empty());
}

TEST(S3Store, WrongCredentialsAreOneLineNamingEndpointAndRefusal) {
  COHORT_REQUIRE_MOTO(moto);
  S3Options wrong_secret = OptionsFor(*moto);
  wrong_secret.secret_access_key = "not-the-secret";
  S3Options wrong_key = OptionsFor(*moto);
  wrong_key.access_key_id = "AKIANOTAKEY000000000";
  for (const auto& [options, code] : {std::pair{wrong_secret, "SignatureDoesNotMatch"},
                                      std::pair{wrong_key, "InvalidAccessKeyId"}}) {
    auto store = OpenS3ObjectStore(moto->FreshUri("creds"), options);
    auto start = std::chrono::steady_clock::now();
    try {
      store->Put("x", std::string("y"));
      FAIL() << "wrong credentials accepted";
    } catch (const Unauthenticated& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(moto->endpoint()), std::string::npos) << msg;
      EXPECT_NE(msg.find(code), std::string::npos) << msg;
      EXPECT_NE(msg.find("refused"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));  // not retried
    EXPECT_THROW(store->Get("x"), Unauthenticated);
    EXPECT_THROW(store->List(""), Unauthenticated);
    EXPECT_THROW(store->Head("x"), Unauthenticated);
  }
  S3Options none = OptionsFor(*moto);
  none.access_key_id.clear();
  EXPECT_THROW(OpenS3ObjectStore("s3://bucket/x", none), Unauthenticated);
}

TEST(S3Store, MissingBucketIsAClearError) {
  COHORT_REQUIRE_MOTO(moto);
  auto store = OpenS3ObjectStore("s3://no-such-bucket-here/run", OptionsFor(*moto));
  for (int op = 0; op < 3; ++op) {
    try {
      if (op == 0) store->Put("k", std::string("v"));
      if (op == 1) store->Get("k");
      if (op == 2) store->List("");
      FAIL() << "op " << op << " passed";
    } catch (const InvalidArgument& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("bucket 'no-such-bucket-here' does not exist"), std::string::npos) << msg;
      EXPECT_NE(msg.find("s3 mb s3://no-such-bucket-here"), std::string::npos) << msg;
      EXPECT_NE(msg.find(moto->endpoint()), std::string::npos) << msg;
    }
  }
}

TEST(S3Store, UnreachableEndpointIsUnavailableInBoundedTime) {
  COHORT_REQUIRE_MOTO(moto);
  S3Options o = OptionsFor(*moto);
  o.endpoint = "http://127.0.0.1:" + std::to_string(net::FreePort());  // nothing listens
  o.max_attempts = 4;
  auto store = OpenS3ObjectStore("s3://bucket/x", o);
  auto start = std::chrono::steady_clock::now();
  try {
    store->Put("k", std::string("v"));
    FAIL() << "put to a closed port passed";
  } catch (const Unavailable& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("cannot reach S3 endpoint " + o.endpoint), std::string::npos) << msg;
    EXPECT_NE(msg.find("after 4 attempts"), std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(store->RetryCount(), 3u);
}

TEST(S3Store, StalledServerTimesOutAndIsUnavailable) {
  COHORT_REQUIRE_MOTO(moto);
  // A socket that accepts connections (the kernel does) but never answers.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  S3Options o = OptionsFor(*moto);
  o.endpoint = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  o.max_attempts = 2;
  o.stall_timeout_s = 1;
  o.backoff_initial_s = 0.05;
  auto store = OpenS3ObjectStore("s3://bucket/x", o);
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(store->Get("k"), Unavailable);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(1900));
  EXPECT_LT(took, std::chrono::seconds(6));
  ::close(fd);
}

TEST(S3Store, EveryObjectIsCorrectBehindAServerFailing30PercentOfRequests) {
  COHORT_REQUIRE_MOTO(moto);
  FaultProxy proxy("127.0.0.1", moto->port(), 0.3, /*seed=*/1234);
  S3Options o = OptionsFor(*moto);
  o.endpoint = proxy.endpoint();  // signed for the proxy's Host, which it forwards unchanged
  o.max_attempts = 12;            // 0.3^12: a request failing every try is ~5e-7
  o.backoff_initial_s = 0.01;
  o.backoff_max_s = 0.2;
  const std::string uri = moto->FreshUri("faults");
  auto store = OpenS3ObjectStore(uri, o);
  std::map<std::string, std::string> written;
  for (size_t size : {size_t{0}, size_t{1}, size_t{7919}, 8 * kMiB + 1, 17 * kMiB + 3})
    written["obj-" + std::to_string(size)] = Payload(size, size + 2);
  for (int i = 0; i < 30; ++i) written["small/" + std::to_string(i)] = Payload(i * 13, i);
  for (const auto& [key, data] : written) store->Put(key, data);
  store->Put("deleted", std::string("gone soon"));
  store->Delete("deleted");

  // Read back through the faulty proxy ...
  auto listed = store->List("");
  ASSERT_EQ(listed.size(), written.size());
  for (const auto& info : listed) EXPECT_EQ(info.size, written[info.key].size()) << info.key;
  for (const auto& [key, data] : written) {
    EXPECT_TRUE(store->Get(key).value() == data) << key;
    EXPECT_EQ(store->Head(key).value().size, data.size()) << key;
  }
  const std::string& big = written["obj-" + std::to_string(17 * kMiB + 3)];
  EXPECT_EQ(store->GetRange("obj-" + std::to_string(17 * kMiB + 3), 9 * kMiB - 7, 100),
            big.substr(9 * kMiB - 7, 100));
  EXPECT_FALSE(store->Get("deleted").has_value());
  // ... and with awscli straight from moto.
  auto fetched = moto->AwsGetAll(PrefixOf(uri, *moto));
  ASSERT_EQ(fetched.size(), written.size());
  for (const auto& [key, data] : written) EXPECT_TRUE(fetched[key] == data) << key;
  EXPECT_EQ(moto->PendingMultipartUploads(PrefixOf(uri, *moto)), 0);

  EXPECT_GT(proxy.faults(), 10) << "requests: " << proxy.requests();
  EXPECT_GT(store->RetryCount(), 10u);
  EXPECT_GE(store->RetryCount(), static_cast<uint64_t>(proxy.faults()));
  EXPECT_GE(proxy.max_concurrent(), 2) << "multipart parts were not uploaded in parallel";
}

TEST(S3Store, FailedPartAbortsTheUpload) {
  COHORT_REQUIRE_MOTO(moto);
  FaultProxy proxy("127.0.0.1", moto->port(), 0, /*seed=*/2);
  S3Options o = OptionsFor(*moto);
  o.endpoint = proxy.endpoint();
  o.max_attempts = 2;
  o.backoff_initial_s = 0.01;
  const std::string uri = moto->FreshUri("failed-part");
  auto store = OpenS3ObjectStore(uri, o);
  store->Put("kept", std::string("old"));
  auto writer = store->NewWriter("kept");
  std::string chunk = Payload(kMiB, 3);
  for (int i = 0; i < 9; ++i) writer->Write(chunk.data(), chunk.size());  // part 1 is sent
  proxy.set_fault_method("PUT");
  proxy.set_fault_rate(1.0);  // every part upload now fails, twice
  try {
    for (int i = 0; i < 20; ++i) writer->Write(chunk.data(), chunk.size());
    writer->Commit();
    FAIL() << "commit passed while every part upload failed";
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("after 2 attempts"), std::string::npos) << e.what();
  }
  EXPECT_THROW(writer->Commit(), InvalidArgument);  // a failed writer stays failed
  writer.reset();
  // The upload was aborted (DELETE still passes the proxy); the old object is untouched.
  EXPECT_EQ(moto->PendingMultipartUploads(PrefixOf(uri, *moto)), 0);
  proxy.set_fault_rate(0);
  EXPECT_EQ(store->Get("kept").value(), "old");
}

TEST(S3Store, RetriedCompleteOfAnAlreadyCompletedUploadSucceeds) {
  COHORT_REQUIRE_MOTO(moto);
  FaultProxy proxy("127.0.0.1", moto->port(), 0, /*seed=*/1);
  proxy.LoseCompleteAnswers(1);
  S3Options o = OptionsFor(*moto);
  o.endpoint = proxy.endpoint();
  o.backoff_initial_s = 0.01;
  auto store = OpenS3ObjectStore(moto->FreshUri("lost-complete"), o);
  const std::string data = Payload(9 * kMiB + 17, 5);
  // The first CompleteMultipartUpload completes the object but its answer is lost; the retry
  // finds the upload gone and recognises the object by its multipart ETag.
  store->Put("obj", data);
  EXPECT_EQ(proxy.faults(), 1);
  EXPECT_GE(store->RetryCount(), 1u);
  EXPECT_TRUE(store->Get("obj").value() == data);
}

TEST(S3Store, UriParsing) {
  COHORT_REQUIRE_MOTO(moto);
  S3Options o = OptionsFor(*moto);
  EXPECT_EQ(OpenS3ObjectStore("s3://bucket", o)->Uri(), "s3://bucket");
  EXPECT_EQ(OpenS3ObjectStore("s3://bucket/", o)->Uri(), "s3://bucket");
  EXPECT_EQ(OpenS3ObjectStore("s3://bucket/a/b/", o)->Uri(), "s3://bucket/a/b");
  EXPECT_THROW(OpenS3ObjectStore("s3:///prefix", o), InvalidArgument);
  EXPECT_THROW(OpenS3ObjectStore("s3://bad bucket/x", o), InvalidArgument);
  EXPECT_THROW(OpenS3ObjectStore("s3://bucket/a//b", o), InvalidArgument);
}

}  // namespace
}  // namespace cohort::checkpoint::testing
