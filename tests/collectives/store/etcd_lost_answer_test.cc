// EtcdStore::Add when etcd applies a txn but its answer never comes back (a connection lost on
// the way back): a gRPC proxy in front of a real etcd forwards every call and, when told to,
// answers a Txn UNAVAILABLE after etcd applied it. The store sends the txn again; the add must
// count once (before the records, Add(n, 5) returned 10 here).
#include <fmt/format.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>

#include "collectives/store/etcd_store.h"
#include "tests/collectives/store/etcd_fixture.h"

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;

class LossyEtcdProxy {
 public:
  explicit LossyEtcdProxy(const std::string& upstream)
      : stub_(grpc::CreateChannel(upstream, grpc::InsecureChannelCredentials())) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterCallbackGenericService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~LossyEtcdProxy() { server_->Shutdown(); }

  std::string endpoint() const { return fmt::format("127.0.0.1:{}", port_); }
  // The next n Txn answers are lost (after etcd applied the txns).
  void LoseTxnAnswers(int n) { to_lose_ = n; }
  int Lost() const { return lost_; }

 private:
  // One call: the request read, forwarded to etcd, and its answer (or the loss) sent back.
  class Call final : public grpc::ServerGenericBidiReactor {
   public:
    Call(LossyEtcdProxy* proxy, grpc::GenericCallbackServerContext* ctx)
        : proxy_(proxy), method_(ctx->method()) {
      StartRead(&request_);
    }
    void OnReadDone(bool ok) override {
      if (!ok) return Finish(grpc::Status(grpc::StatusCode::INTERNAL, "no request"));
      upstream_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      proxy_->stub_.UnaryCall(&upstream_, method_, grpc::StubOptions(), &request_, &answer_,
                              [this](grpc::Status s) { Answer(std::move(s)); });
    }
    void OnWriteDone(bool) override {}
    void OnDone() override { delete this; }

   private:
    void Answer(grpc::Status s) {
      const bool txn = method_.size() >= 4 && method_.compare(method_.size() - 4, 4, "/Txn") == 0;
      if (s.ok() && txn && proxy_->to_lose_.fetch_sub(1) > 0) {
        ++proxy_->lost_;
        return Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the proxy lost etcd's answer"));
      }
      if (!s.ok()) return Finish(s);
      StartWriteAndFinish(&answer_, grpc::WriteOptions(), grpc::Status::OK);
    }
    LossyEtcdProxy* proxy_;
    const std::string method_;
    grpc::ByteBuffer request_, answer_;
    grpc::ClientContext upstream_;
  };
  class Service final : public grpc::CallbackGenericService {
   public:
    explicit Service(LossyEtcdProxy* proxy) : proxy_(proxy) {}
    grpc::ServerGenericBidiReactor* CreateReactor(
        grpc::GenericCallbackServerContext* ctx) override {
      return new Call(proxy_, ctx);
    }

   private:
    LossyEtcdProxy* proxy_;
  };

  grpc::GenericStub stub_;
  Service service_{this};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<int> to_lose_{0};
  std::atomic<int> lost_{0};
};

TEST(EtcdLostAnswerTest, AnAddWhoseAnswerIsLostCountsOnce) {
  if (auto why = cohort::testing::EtcdServer::UnavailableReason(); !why.empty())
    GTEST_SKIP() << why;
  cohort::testing::EtcdServer etcd;
  LossyEtcdProxy proxy(etcd.endpoint());
  const std::string prefix = EtcdStore::KeyPrefix("lost-answer");
  EtcdStore store(proxy.endpoint(), prefix), direct(etcd.endpoint(), prefix);
  store.Connect(milliseconds(5000));
  direct.Connect(milliseconds(5000));

  proxy.LoseTxnAnswers(1);  // the add that creates the counter
  EXPECT_EQ(store.Add("n", 5), 5);
  proxy.LoseTxnAnswers(1);  // an add to a counter that exists
  EXPECT_EQ(store.Add("n", 1), 6) << "a txn sent again after its lost answer counted twice";
  EXPECT_EQ(proxy.Lost(), 2) << "the proxy lost no answer: the test tested nothing";
  EXPECT_EQ(direct.Get("n", milliseconds(0)), "6");
  // Another client's add between the lost answer and the resend is counted, once.
  EXPECT_EQ(direct.Add("n", 10), 16);
  proxy.LoseTxnAnswers(1);
  EXPECT_EQ(store.Add("n", 1), 17);
  EXPECT_EQ(direct.Get("n", milliseconds(0)), "17");
  EXPECT_EQ(proxy.Lost(), 3);
  // The adds' records stay out of List.
  EXPECT_EQ(direct.List(""), (std::map<std::string, std::string>{{"n", "17"}}));
}

}  // namespace
}  // namespace cohort::collectives
