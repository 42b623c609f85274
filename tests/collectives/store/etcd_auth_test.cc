// EtcdStore on an etcd with its v3 auth enabled (user root with role root, as `etcdctl user add
// root; etcdctl auth enable` leaves it): with COHORT_RDZV_USER / COHORT_RDZV_PASSWORD every
// operation works, also from many threads; without them, with a wrong password, or as a user
// without a role, it is refused at once (Unauthenticated) naming what to set, never retried until
// the deadline.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "collectives/store/etcd_store.h"
#include "collectives/store/store_from_env.h"
#include "common/error.h"
#include "tests/collectives/store/etcd_fixture.h"
#include "tests/collectives/store/store_test_util.h"

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using testing::Clock;
using ::testing::HasSubstr;
using testing::MillisSince;
using testing::ThrownMessage;

class EtcdAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = cohort::testing::EtcdServer::UnavailableReason(); !why.empty()) {
      GTEST_SKIP() << why;
    }
    etcd_ = std::make_unique<cohort::testing::EtcdServer>();
    etcd_->EnableAuth("r00t-pw", "nobody");
  }
  std::shared_ptr<EtcdStore> Store(EtcdCredentials credentials) {
    return std::make_shared<EtcdStore>(etcd_->endpoint(), EtcdStore::KeyPrefix("auth"),
                                       std::move(credentials));
  }
  // Connect fails with Unauthenticated well before its 10 s deadline; returns the message.
  std::string RefusedAtConnect(EtcdCredentials credentials) {
    auto s = Store(std::move(credentials));
    const auto start = Clock::now();
    std::string msg = ThrownMessage<Unauthenticated>([&] { s->Connect(milliseconds(10000)); });
    EXPECT_LT(MillisSince(start), 3000) << msg;
    EXPECT_THAT(msg, HasSubstr(etcd_->endpoint()));
    return msg;
  }
  std::unique_ptr<cohort::testing::EtcdServer> etcd_;
};

TEST_F(EtcdAuthTest, WithCredentialsEveryOperationWorks) {
  auto s = Store({"root", "r00t-pw"});
  s->Connect(milliseconds(5000));
  s->Set("a", "1");
  EXPECT_EQ(s->Get("a", milliseconds(0)), "1");
  EXPECT_EQ(s->Add("n", 5), 5);
  EXPECT_EQ(s->Add("n", -2), 3);
  EXPECT_EQ(s->CompareSet("c", "", "x"), "x");
  EXPECT_EQ(s->CompareSet("c", "nope", "y"), "x");
  EXPECT_EQ(s->List(""), (std::map<std::string, std::string>{{"a", "1"}, {"c", "x"}, {"n", "3"}}));
  EXPECT_TRUE(s->Delete("a"));
  EXPECT_FALSE(s->Delete("a"));
}

TEST_F(EtcdAuthTest, ConcurrentAddsWithOneTokenLoseNothing) {
  auto s = Store({"root", "r00t-pw"});
  s->Connect(milliseconds(5000));
  std::vector<std::thread> threads;
  for (int t = 0; t < 7; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 13; ++i) s->Add("sum", 1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(s->Get("sum", milliseconds(0)), "91");
}

TEST_F(EtcdAuthTest, NoCredentialsAreRefusedNamingTheVariables) {
  const std::string msg = RefusedAtConnect({});
  EXPECT_THAT(msg, HasSubstr("user name is empty"));
  EXPECT_THAT(msg, HasSubstr("set COHORT_RDZV_USER and COHORT_RDZV_PASSWORD"));
}

TEST_F(EtcdAuthTest, WrongPasswordIsRefusedNamingTheUser) {
  const std::string msg = RefusedAtConnect({"root", "guess"});
  EXPECT_THAT(msg, HasSubstr("refused user 'root'"));
  EXPECT_THAT(msg, HasSubstr("invalid user ID or password"));
  EXPECT_THAT(msg, HasSubstr("check COHORT_RDZV_USER and COHORT_RDZV_PASSWORD"));
}

TEST_F(EtcdAuthTest, UserWithoutARoleIsRefused) {
  const std::string msg = RefusedAtConnect({"nobody", "r00t-pw"});
  EXPECT_THAT(msg, HasSubstr("permission denied"));
  EXPECT_THAT(msg, HasSubstr("give user 'nobody' a role"));
}

TEST_F(EtcdAuthTest, WorkersTakeTheCredentialsFromTheEnvironment) {
  testing::ScopedEnv env({{"COHORT_STORE", "etcd://" + etcd_->endpoint()},
                          {"COHORT_RUN_ID", "auth"},
                          {"COHORT_RDZV_USER", "root"},
                          {"COHORT_RDZV_PASSWORD", "r00t-pw"},
                          {"MASTER_ADDR", std::nullopt},
                          {"MASTER_PORT", std::nullopt}});
  auto s = ConnectStoreFromEnv();
  s->Set("from-env", "v");
  auto check = Store({"root", "r00t-pw"});
  EXPECT_EQ(check->Get("from-env", milliseconds(0)), "v");
}

}  // namespace
}  // namespace cohort::collectives
