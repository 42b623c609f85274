// A real S3 API server for tests: moto on 127.0.0.1 on a free port, with signature checking ON
// (INITIAL_NO_AUTH_ACTION_COUNT lets only the IAM setup through unsigned), one IAM user with an
// inline Allow-* policy and its access key, and one bucket. Code under test gets only that key
// (Env() / ExportEnv()), so a signing bug fails the test. awscli, a client we did not write,
// checks what landed (Aws(), AwsGet()).
//
// One server per test process, started on first use (about 5 s: moto, then one awscli session
// for the setup) and killed when the process exits (also when it dies: the server gets
// PR_SET_PDEATHSIG, which fires when the *thread* that started it exits, so call Shared() first
// from the main thread). Register such a test binary with one add_test(), not
// gtest_discover_tests(), or every test case pays for its own server. moto is started through
// moto_fixture_server.py, which makes it verify signatures against the raw request URI as AWS does
// (see that file).
//
//   TEST(S3, Something) {
//     COHORT_REQUIRE_MOTO(moto);               // GTEST_SKIP()s when moto cannot run here
//     moto->ExportEnv();                       // AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
//     auto store = OpenObjectStore(moto->FreshUri("mytest"));   // s3://bucket/mytest-<n>
//     ...
//     EXPECT_EQ(moto->AwsGet("mytest-0/key").value(), bytes);
//   }
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cohort::testing {

struct AwsResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

struct AwsObject {
  std::string key;  // full key in the bucket
  uint64_t size = 0;
  std::string etag;  // as S3 lists it, quotes included; multipart objects end in -<parts>"
};

class MotoServer {
 public:
  // The shared server, started on the first call (a few seconds); nullptr when it cannot start
  // here, with the reason in SkipReason().
  static MotoServer* Shared();
  static const std::string& SkipReason();

  const std::string& endpoint() const { return endpoint_; }  // "http://127.0.0.1:PORT"
  int port() const { return port_; }
  const std::string& bucket() const { return bucket_; }  // exists, empty at start
  const std::string& access_key_id() const { return access_key_id_; }
  const std::string& secret_access_key() const { return secret_access_key_; }
  const std::string& region() const { return region_; }

  // What the code under test needs to reach the server as the test user: AWS_ENDPOINT_URL,
  // AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; COHORT_S3_* and AWS_SESSION_TOKEN
  // set empty (= unset) so that nothing else leaks in. For child processes.
  std::map<std::string, std::string> Env() const;
  // Sets Env() in this process.
  void ExportEnv() const;

  // "s3://<bucket>/<name>-<n>", a prefix no other call returned, for one test's objects.
  std::string FreshUri(const std::string& name);
  // Creates another bucket.
  void CreateBucket(const std::string& name) const;

  // Runs awscli (`aws --endpoint-url <endpoint> ARGS...`) as the test user; 60 s at most.
  AwsResult Aws(const std::vector<std::string>& args) const;
  // Downloads s3://<bucket>/<key> with `aws s3 cp`: the bytes, or nullopt when cp fails.
  std::optional<std::string> AwsGet(const std::string& key) const;
  // Downloads every object under s3://<bucket>/<prefix>/ with one `aws s3 cp --recursive`:
  // key (relative to prefix/) -> bytes. Throws std::runtime_error when awscli fails.
  std::map<std::string, std::string> AwsGetAll(const std::string& prefix) const;
  // Every object under prefix, as `aws s3api list-objects-v2` sees it (awscli pages for us).
  std::vector<AwsObject> AwsList(const std::string& prefix) const;
  // Multipart uploads in progress in the bucket whose key starts with prefix
  // (`aws s3api list-multipart-uploads`).
  int PendingMultipartUploads(const std::string& prefix) const;

  ~MotoServer();

 private:
  MotoServer() = default;
  void Start();  // throws std::runtime_error with the reason
  AwsResult RunAws(const std::vector<std::string>& args,
                   const std::map<std::string, std::string>& env) const;

  std::string python_;  // the interpreter that has moto and awscli
  pid_t pid_ = -1;
  std::string log_path_;
  int port_ = 0;
  std::string endpoint_;
  std::string bucket_ = "cohort-test";
  std::string region_ = "us-east-1";
  std::string access_key_id_;
  std::string secret_access_key_;
  int fresh_ = 0;
};

}  // namespace cohort::testing

#define COHORT_REQUIRE_MOTO(var)                                                \
  ::cohort::testing::MotoServer* var = ::cohort::testing::MotoServer::Shared(); \
  if (var == nullptr) GTEST_SKIP() << ::cohort::testing::MotoServer::SkipReason()
