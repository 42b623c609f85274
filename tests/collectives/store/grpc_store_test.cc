// The gRPC server and client in one process, over 127.0.0.1.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <memory>
#include <thread>

#include "collectives/store/grpc_store_client.h"
#include "collectives/store/grpc_store_server.h"
#include "collectives/store/prefix_store.h"
#include "collectives/store/store.grpc.pb.h"
#include "common/error.h"
#include "common/net.h"
#include "tests/collectives/store/store_test_util.h"

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using testing::Clock;
using ::testing::HasSubstr;
using testing::MillisSince;
using ::testing::Not;
using testing::ThrownMessage;

constexpr char kToken[] = "s3cret-token";

class GrpcStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<GrpcStoreServer>("127.0.0.1", 0, kToken);
    server_->Start();
    address_ = "127.0.0.1:" + std::to_string(server_->Port());
  }

  std::unique_ptr<GrpcStoreClient> Client(const std::string& token = kToken) {
    return std::make_unique<GrpcStoreClient>(address_, token, milliseconds(2000));
  }

  // Polls until the server holds n watches (or 2 s pass); returns how many it holds.
  size_t AwaitWatches(size_t n) {
    for (int i = 0; i < 200 && server_->table()->NumWatches() != n; ++i) {
      std::this_thread::sleep_for(milliseconds(10));
    }
    return server_->table()->NumWatches();
  }

  std::unique_ptr<GrpcStoreServer> server_;
  std::string address_;
};

TEST_F(GrpcStoreTest, EveryOperation) {
  EXPECT_GT(server_->Port(), 0);
  EXPECT_EQ(server_->Address(), address_);
  auto c = Client();
  const std::string binary("\0key\xff", 5), value("\0\0val\n", 6);
  c->Set(binary, value);
  EXPECT_EQ(c->Get(binary, milliseconds(0)), value);
  EXPECT_EQ(server_->table()->Get(binary), value);

  EXPECT_EQ(c->Add("n", 3), 3);
  EXPECT_EQ(c->Add("n", -1), 2);
  c->Set("word", "abc");
  auto msg = ThrownMessage<InvalidArgument>([&] { c->Add("word", 1); });
  EXPECT_THAT(msg, HasSubstr("not a decimal integer"));
  EXPECT_THAT(msg, HasSubstr(address_));

  EXPECT_EQ(c->CompareSet("cas", "x", "y"), "");  // absent, expected non-empty: no change
  EXPECT_EQ(c->CompareSet("cas", "", "1"), "1");
  EXPECT_EQ(c->CompareSet("cas", "0", "2"), "1");
  EXPECT_EQ(c->CompareSet("cas", "1", "2"), "2");

  EXPECT_TRUE(c->Delete("word"));
  EXPECT_FALSE(c->Delete("word"));

  c->Set("p/a", "1");
  c->Set("p/b", "2");
  auto listed = c->List("p/");
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed.at("p/a"), "1");
  EXPECT_EQ(listed.at("p/b"), "2");
  EXPECT_EQ(c->List("").size(), 5u);

  c->Wait({"p/a", "p/b", "n"}, milliseconds(100));
}

TEST_F(GrpcStoreTest, WrongTokenIsRefused) {
  auto c = Client("not-the-token");
  auto msg = ThrownMessage<Unauthenticated>([&] { c->Set("k", "v"); });
  EXPECT_THAT(msg, HasSubstr("store at " + address_ + " refused the token"));
  EXPECT_THAT(msg, HasSubstr("COHORT_TOKEN differs from the store's"));
  EXPECT_THAT(msg, Not(HasSubstr(kToken)));  // never echo a secret
  ThrownMessage<Unauthenticated>([&] { c->Get("k", milliseconds(1000)); });
  ThrownMessage<Unauthenticated>([&] { c->Wait({"k"}, milliseconds(1000)); });
  ThrownMessage<Unauthenticated>([&] { c->List(""); });
  EXPECT_EQ(server_->table()->Size(), 0u);  // nothing was written
  // A token that is a prefix of the right one is wrong too.
  auto prefix = Client(std::string(kToken).substr(0, 4));
  ThrownMessage<Unauthenticated>([&] { prefix->Add("n", 1); });
}

TEST_F(GrpcStoreTest, MissingTokenIsRefused) {
  auto c = Client("");
  auto msg = ThrownMessage<Unauthenticated>([&] { c->Get("k", milliseconds(0)); });
  EXPECT_THAT(msg, HasSubstr("store at " + address_ + " requires a token"));
  EXPECT_THAT(msg, HasSubstr("set COHORT_TOKEN"));
  ThrownMessage<Unauthenticated>([&] { c->Set("k", "v"); });
  EXPECT_EQ(server_->table()->Size(), 0u);
}

TEST(GrpcStoreNoAuthTest, EmptyServerTokenAcceptsEveryClient) {
  GrpcStoreServer server("127.0.0.1", 0, "");
  server.Start();
  const std::string address = "127.0.0.1:" + std::to_string(server.Port());
  GrpcStoreClient none(address, "", milliseconds(2000));
  GrpcStoreClient some(address, "anything", milliseconds(2000));
  none.Set("k", "1");
  EXPECT_EQ(some.Get("k", milliseconds(0)), "1");
}

TEST_F(GrpcStoreTest, GetReturnsAKeySetLaterByAnotherClient) {
  auto waiter = Client();
  auto setter = Client();
  setter->Set("warmup", "");  // connect both before timing
  waiter->Set("warmup", "");
  const auto start = Clock::now();
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(300));
    setter->Set("rank0/addr", "10.0.0.1:1234");
  });
  EXPECT_EQ(waiter->Get("rank0/addr", milliseconds(5000)), "10.0.0.1:1234");
  const auto elapsed = MillisSince(start);
  t.join();
  EXPECT_GE(elapsed, 290);
  EXPECT_LT(elapsed, 3000);
  EXPECT_EQ(AwaitWatches(0), 0u);
}

TEST_F(GrpcStoreTest, GetTimeoutNamesTheKeyAndTheWait) {
  auto c = Client();
  const auto start = Clock::now();
  auto msg = ThrownMessage<Timeout>([&] { c->Get("rank5/addr", milliseconds(200)); });
  const auto elapsed = MillisSince(start);
  EXPECT_GE(elapsed, 195);
  EXPECT_LT(elapsed, 2000);  // the server answered, not the client's 5 s grace deadline
  EXPECT_THAT(msg, HasSubstr("store at " + address_ + " Get('rank5/addr') timed out after"));
  EXPECT_THAT(msg, HasSubstr(" ms"));
  EXPECT_EQ(server_->table()->NumWatches(), 0u);
}

TEST_F(GrpcStoreTest, WaitTimeoutNamesTheMissingKeys) {
  auto c = Client();
  c->Set("rank/0", "x");
  auto msg = ThrownMessage<Timeout>([&] { c->Wait({"rank/0", "rank/1"}, milliseconds(100)); });
  EXPECT_THAT(msg, HasSubstr("1 of 2 keys still missing: 'rank/1'"));
  EXPECT_THAT(msg, Not(HasSubstr("'rank/0'")));
}

TEST(GrpcStoreConnectTest, ClientStartedBeforeTheServerWaitsForIt) {
  const int port = net::FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  GrpcStoreClient c(address, kToken, milliseconds(5000));
  const auto start = Clock::now();
  auto value = std::async(std::launch::async, [&] {
    c.Set("early", "bird");
    return c.Get("early", milliseconds(0));
  });
  std::this_thread::sleep_for(milliseconds(500));
  GrpcStoreServer server("127.0.0.1", port, kToken);
  server.Start();
  ASSERT_EQ(value.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(value.get(), "bird");
  EXPECT_GE(MillisSince(start), 490);
  EXPECT_EQ(server.table()->Get("early"), "bird");
}

TEST(GrpcStoreConnectTest, ClientWhoseServerNeverComesUpFailsWithinTheDeadline) {
  const std::string address = "127.0.0.1:" + std::to_string(net::FreePort());
  GrpcStoreClient c(address, kToken, milliseconds(1000));
  const auto start = Clock::now();
  auto msg = ThrownMessage<Unavailable>([&] { c.Get("k", milliseconds(10000)); });
  const auto elapsed = MillisSince(start);
  EXPECT_GE(elapsed, 950);
  EXPECT_LT(elapsed, 1000 + 500);
  EXPECT_THAT(msg, HasSubstr("could not reach the store at " + address));
  EXPECT_THAT(msg, HasSubstr("tried for 1."));
  EXPECT_THAT(msg, HasSubstr("COHORT_STORE"));
}

TEST(GrpcStoreConnectTest, BadAddressOrTokenIsRejectedUpFront) {
  EXPECT_THAT(ThrownMessage<InvalidArgument>([] { GrpcStoreClient("nohost", "", {}); }),
              HasSubstr("host:port"));
  ThrownMessage<InvalidArgument>([] { GrpcStoreClient("127.0.0.1:1", "bad\ntoken", {}); });
}

TEST_F(GrpcStoreTest, PrefixStoreOverTheNetwork) {
  auto c = std::shared_ptr<Store>(Client());
  PrefixStore a(c, "job1"), b(c, "job2");
  a.Set("k", "A");
  b.Set("k", "B");
  EXPECT_EQ(a.Get("k", milliseconds(0)), "A");
  EXPECT_EQ(b.Get("k", milliseconds(0)), "B");
  EXPECT_EQ(server_->table()->Get("job1/k"), "A");
  auto listed = b.List("");
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed.at("k"), "B");
  EXPECT_THAT(ThrownMessage<Timeout>([&] { a.Get("missing", milliseconds(50)); }),
              HasSubstr("'job1/missing'"));
}

// A raw call whose client goes away (its own deadline, or an explicit cancel) while the server
// waits must remove the server's watch.
TEST_F(GrpcStoreTest, ClientThatGoesAwayWhileWaitingDoesNotLeakTheWatch) {
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  auto stub = store::StoreService::NewStub(channel);

  store::GetRequest req;
  req.set_key("never");
  req.set_timeout_ms(60000);
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(300));
    store::GetResponse resp;
    auto status = stub->Get(&ctx, req, &resp);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_EQ(AwaitWatches(0), 0u);

  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
  store::WaitRequest wreq;
  wreq.add_keys("never");
  wreq.set_timeout_ms(60000);
  store::WaitResponse wresp;
  auto pending = std::async(std::launch::async, [&] { return stub->Wait(&ctx, wreq, &wresp); });
  EXPECT_EQ(AwaitWatches(1), 1u);
  ctx.TryCancel();
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(pending.get().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(AwaitWatches(0), 0u);
}

int ThreadCount() {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)entry;
    ++n;
  }
  return n;
}

// 1000 Gets wait at once (sent asynchronously from this thread): the server holds a watch for
// each but no thread; one Set releases them all.
TEST_F(GrpcStoreTest, ThousandWaitingCallsHoldNoServerThreads) {
  constexpr int kCalls = 1000;
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  auto stub = store::StoreService::NewStub(channel);
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + milliseconds(2000)));
  const int threads_before = ThreadCount();

  struct Call {
    grpc::ClientContext ctx;
    store::GetRequest req;
    store::GetResponse resp;
  };
  std::vector<std::unique_ptr<Call>> calls;
  std::atomic<int> ok{0}, done{0};
  for (int i = 0; i < kCalls; ++i) {
    auto call = std::make_unique<Call>();
    call->ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    call->req.set_key("go");
    call->req.set_timeout_ms(15000);
    Call* c = call.get();
    stub->async()->Get(&c->ctx, &c->req, &c->resp, [&ok, &done, c](grpc::Status s) {
      if (s.ok() && c->resp.value() == "now") ok++;
      done++;
    });
    calls.push_back(std::move(call));
  }
  EXPECT_EQ(AwaitWatches(kCalls), static_cast<size_t>(kCalls));
  EXPECT_LT(ThreadCount() - threads_before, 50) << "waiting calls should not hold threads";

  Client()->Set("go", "now");
  for (int i = 0; i < 500 && done.load() < kCalls; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(ok.load(), kCalls);
  // Whatever happened above, no call may outlive `calls`.
  for (auto& call : calls) call->ctx.TryCancel();
  while (done.load() < kCalls) std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(server_->table()->NumWatches(), 0u);
}

TEST_F(GrpcStoreTest, ShutdownReleasesWaitingClientsWithUnavailable) {
  auto c = Client();
  c->Set("warmup", "");
  auto pending = std::async(std::launch::async, [&] {
    return ThrownMessage<Unavailable>([&] { c->Get("never", milliseconds(60000)); });
  });
  ASSERT_EQ(AwaitWatches(1), 1u);
  const auto start = Clock::now();
  server_->Shutdown();
  EXPECT_LT(MillisSince(start), 3000);
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_THAT(pending.get(), HasSubstr(address_));
  EXPECT_EQ(server_->table()->NumWatches(), 0u);
  // Later calls fail fast too.
  const auto after = Clock::now();
  ThrownMessage<Unavailable>([&] { c->Set("k", "v"); });
  EXPECT_LT(MillisSince(after), 3000);
  server_->Shutdown();  // idempotent
}

TEST_F(GrpcStoreTest, SecondServerOnTheSamePortFailsToStart) {
  GrpcStoreServer other("127.0.0.1", server_->Port(), kToken);
  auto msg = ThrownMessage<Unavailable>([&] { other.Start(); });
  EXPECT_THAT(msg, HasSubstr(address_));
  EXPECT_EQ(other.Port(), 0);
  EXPECT_THROW(server_->Start(), InvalidArgument);  // already started
  EXPECT_THROW(GrpcStoreServer("127.0.0.1", 70000, ""), InvalidArgument);
}

}  // namespace
}  // namespace cohort::collectives
