// The Store contract, checked the same way against every implementation (MemoryStore, the gRPC
// store, EtcdStore over a real etcd started here), then what is particular to etcd: run-id
// namespacing, an unreachable etcd named within its deadline, the COHORT_STORE=etcd://
// selection, and the requests and answers of etcd's gRPC API.
#include "collectives/store/etcd_store.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <set>
#include <thread>

#include "collectives/store/etcd_api.h"
#include "collectives/store/grpc_store_client.h"
#include "collectives/store/grpc_store_server.h"
#include "collectives/store/memory_store.h"
#include "collectives/store/prefix_store.h"
#include "collectives/store/store_backends.h"
#include "collectives/store/store_from_env.h"
#include "common/error.h"
#include "common/net.h"
#include "tests/collectives/store/etcd_fixture.h"
#include "tests/collectives/store/store_test_util.h"

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using testing::Clock;
using ::testing::HasSubstr;
using testing::MillisSince;
using ::testing::Not;
using testing::ThrownMessage;

// One backend: makes clients that all see the same keys.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::shared_ptr<Store> Client() = 0;
};

class MemoryBackend : public Backend {
 public:
  std::shared_ptr<Store> Client() override { return std::make_shared<MemoryStore>(table_); }

 private:
  std::shared_ptr<KvTable> table_ = std::make_shared<KvTable>();
};

class GrpcBackend : public Backend {
 public:
  GrpcBackend() : server_("127.0.0.1", 0, "t") { server_.Start(); }
  std::shared_ptr<Store> Client() override {
    return std::make_shared<GrpcStoreClient>(server_.Address(), "t", milliseconds(2000));
  }

 private:
  GrpcStoreServer server_;
};

class EtcdBackend : public Backend {
 public:
  std::shared_ptr<Store> Client() override {
    auto s = std::make_shared<EtcdStore>(etcd_.endpoint(), EtcdStore::KeyPrefix("conformance"));
    s->Connect(milliseconds(5000));
    return s;
  }

 private:
  cohort::testing::EtcdServer etcd_;
};

class StoreConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "memory") backend_ = std::make_unique<MemoryBackend>();
    if (GetParam() == "grpc") backend_ = std::make_unique<GrpcBackend>();
    if (GetParam() == "etcd") {
      if (auto why = cohort::testing::EtcdServer::UnavailableReason(); !why.empty()) {
        GTEST_SKIP() << why;
      }
      backend_ = std::make_unique<EtcdBackend>();
    }
  }
  std::unique_ptr<Backend> backend_;
};

TEST_P(StoreConformance, EveryOperation) {
  auto s = backend_->Client();
  const std::string binary("\0key\xff", 5), value("\0\0val\n", 6);
  s->Set(binary, value);
  EXPECT_EQ(s->Get(binary, milliseconds(0)), value);
  s->Set(binary, "second");
  EXPECT_EQ(s->Get(binary, milliseconds(0)), "second");
  s->Set("empty", "");
  EXPECT_EQ(s->Get("empty", milliseconds(0)), "");

  EXPECT_EQ(s->Add("n", 5), 5);
  EXPECT_EQ(s->Add("n", -7), -2);
  EXPECT_EQ(s->Get("n", milliseconds(0)), "-2");
  EXPECT_THAT(ThrownMessage<InvalidArgument>([&] { s->Add(binary, 1); }), Not(""));

  EXPECT_EQ(s->CompareSet("cas", "", "a"), "a");     // absent matches ""
  EXPECT_EQ(s->CompareSet("cas", "", "b"), "a");     // present: no match, returns current
  EXPECT_EQ(s->CompareSet("cas", "x", "b"), "a");    // wrong expected
  EXPECT_EQ(s->CompareSet("cas", "a", "b"), "b");    // match
  EXPECT_EQ(s->CompareSet("none", "x", "y"), "");    // absent, expected something: absent
  EXPECT_THAT(ThrownMessage<Timeout>([&] { s->Get("none", milliseconds(0)); }), HasSubstr("none"));

  EXPECT_TRUE(s->Delete("cas"));
  EXPECT_FALSE(s->Delete("cas"));

  for (const char* k : {"p/1", "p/2", "p/3/x", "q/1", "p"}) s->Set(k, std::string(k) + "!");
  const std::map<std::string, std::string> want = {
      {"p/1", "p/1!"}, {"p/2", "p/2!"}, {"p/3/x", "p/3/x!"}};
  EXPECT_EQ(s->List("p/"), want);
  EXPECT_TRUE(s->List("zz/").empty());
}

TEST_P(StoreConformance, GetWaitsForAKeySetLaterByAnotherClient) {
  auto waiter = backend_->Client(), setter = backend_->Client();
  const auto start = Clock::now();
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(200));
    setter->Set("late", "here");
  });
  EXPECT_EQ(waiter->Get("late", milliseconds(5000)), "here");
  t.join();
  EXPECT_GE(MillisSince(start), 150);
  EXPECT_LT(MillisSince(start), 2000);
}

TEST_P(StoreConformance, GetTimeoutNamesTheKeyAndTheWait) {
  auto s = backend_->Client();
  const auto start = Clock::now();
  const std::string msg = ThrownMessage<Timeout>([&] { s->Get("never", milliseconds(300)); });
  EXPECT_THAT(msg, HasSubstr("'never'"));
  EXPECT_GE(MillisSince(start), 250);
  EXPECT_LT(MillisSince(start), 2000);
  const auto zero = Clock::now();
  ThrownMessage<Timeout>([&] { s->Get("never", milliseconds(0)); });
  EXPECT_LT(MillisSince(zero), 500);  // a zero timeout does not wait
}

TEST_P(StoreConformance, WaitReturnsOnceEveryKeyExistsAndNamesOnlyTheMissing) {
  auto s = backend_->Client(), other = backend_->Client();
  s->Set("w/a", "1");
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(100));
    other->Set("w/b", "1");
  });
  s->Wait({"w/a", "w/b"}, milliseconds(5000));
  t.join();
  const std::string msg =
      ThrownMessage<Timeout>([&] { s->Wait({"w/a", "w/c", "w/d"}, milliseconds(300)); });
  EXPECT_THAT(msg, HasSubstr("'w/c'"));
  EXPECT_THAT(msg, HasSubstr("'w/d'"));
  EXPECT_THAT(msg, Not(HasSubstr("'w/a'")));
}

TEST_P(StoreConformance, ConcurrentAddsFromManyClientsLoseNothing) {
  constexpr int kThreads = 4, kEach = 40;
  std::vector<std::shared_ptr<Store>> clients;
  for (int i = 0; i < kThreads; ++i) clients.push_back(backend_->Client());
  std::vector<std::vector<int64_t>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < kEach; ++j) seen[i].push_back(clients[i]->Add("counter", 1));
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& v : seen) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));  // every result distinct
  EXPECT_EQ(*all.begin(), 1);
  EXPECT_EQ(*all.rbegin(), kThreads * kEach);
  EXPECT_EQ(clients[0]->Get("counter", milliseconds(0)), std::to_string(kThreads * kEach));
}

TEST_P(StoreConformance, ConcurrentCompareSetHasExactlyOneWinner) {
  constexpr int kThreads = 8;
  std::vector<std::shared_ptr<Store>> clients;
  for (int i = 0; i < kThreads; ++i) clients.push_back(backend_->Client());
  std::vector<std::string> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { got[i] = clients[i]->CompareSet("leader", "", std::to_string(i)); });
  }
  for (auto& t : threads) t.join();
  int winners = 0;
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(got[i], got[0]);  // everyone sees the one winner
    winners += got[i] == std::to_string(i);
  }
  EXPECT_EQ(winners, 1);
}

// Store::Join (one call on gRPC, the default sequence elsewhere): odd group sizes, through a
// PrefixStore, every member released together with the same keys left behind.
TEST_P(StoreConformance, JoinReleasesEveryMemberOnceAllArrive) {
  for (const int size : {1, 3, 7}) {
    const std::string prefix = fmt::format("g{}/join/", size);
    std::vector<std::shared_ptr<Store>> clients;
    for (int r = 0; r < size; ++r) {
      clients.push_back(std::make_shared<PrefixStore>(backend_->Client(), "scope"));
    }
    std::vector<int> joined(size, -1);
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
      threads.emplace_back([&, r] {
        joined[r] = clients[r]->Join(prefix, r, size, "n" + std::to_string(r), milliseconds(10000));
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(joined, std::vector<int>(size, 1)) << "size " << size;
    auto raw = backend_->Client();
    EXPECT_EQ(raw->Get("scope/" + prefix + "all", milliseconds(0)), "1");
    for (int r = 0; r < size; ++r) {
      EXPECT_EQ(raw->Get("scope/" + prefix + std::to_string(r), milliseconds(0)),
                "n" + std::to_string(r));
    }
  }
}

TEST_P(StoreConformance, JoinRefusesAClaimedRankAtOnceAndTimesOutWithoutTheRest) {
  auto s = backend_->Client();
  s->Set("dup/join/1", "an earlier group");
  const auto start = Clock::now();
  EXPECT_FALSE(s->Join("dup/join/", 1, 3, "mine", milliseconds(5000)));
  EXPECT_LT(MillisSince(start), 2000);  // a duplicate does not wait
  EXPECT_EQ(s->Get("dup/join/1", milliseconds(0)), "an earlier group");

  const auto wait_start = Clock::now();
  const std::string msg =
      ThrownMessage<Timeout>([&] { s->Join("alone/join/", 0, 2, "n0", milliseconds(300)); });
  EXPECT_THAT(msg, HasSubstr("all"));
  EXPECT_GE(MillisSince(wait_start), 250);
  EXPECT_LT(MillisSince(wait_start), 3000);
  EXPECT_EQ(s->Get("alone/join/0", milliseconds(0)), "n0");
  EXPECT_THAT(ThrownMessage<Timeout>([&] { s->Get("alone/join/all", milliseconds(0)); }),
              HasSubstr("all"));
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreConformance, ::testing::Values("memory", "grpc", "etcd"),
                         [](const auto& info) { return info.param; });

// ---- etcd only ----

class EtcdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = cohort::testing::EtcdServer::UnavailableReason(); !why.empty()) {
      GTEST_SKIP() << why;
    }
    etcd_ = std::make_unique<cohort::testing::EtcdServer>();
  }
  std::shared_ptr<EtcdStore> Store(const std::string& prefix) {
    auto s = std::make_shared<EtcdStore>(etcd_->endpoint(), prefix);
    s->Connect(milliseconds(5000));
    return s;
  }
  std::unique_ptr<cohort::testing::EtcdServer> etcd_;
};

TEST_F(EtcdStoreTest, KeysAreNamespacedByRunId) {
  auto a = Store(EtcdStore::KeyPrefix("run-a")), b = Store(EtcdStore::KeyPrefix("run-b"));
  auto raw = Store("");
  a->Set("node/0", "a0");
  b->Set("node/0", "b0");
  EXPECT_EQ(a->Get("node/0", milliseconds(0)), "a0");
  EXPECT_EQ(b->Get("node/0", milliseconds(0)), "b0");
  EXPECT_EQ(a->List("node/"), (std::map<std::string, std::string>{{"node/0", "a0"}}));
  EXPECT_EQ(raw->List("cohort/"), (std::map<std::string, std::string>{
                                      {"cohort/run-a/node/0", "a0"}, {"cohort/run-b/node/0", "b0"}}));
}

// Each Add's record (lost-answer protection) is deleted by the store's next Add: they do not pile
// up, one per Add, in a long job's etcd.
TEST_F(EtcdStoreTest, AddsLeaveOnlyTheLastAddsRecordBehind) {
  auto s = Store(EtcdStore::KeyPrefix("records")), raw = Store("");
  const std::string records = "cohort/records/.cohort-adds/";
  for (int i = 0; i < 20; ++i) s->Add(i % 2 ? "odd" : "even", 1);
  EXPECT_EQ(s->Get("odd", milliseconds(0)), "10");
  EXPECT_EQ(s->Get("even", milliseconds(0)), "10");
  EXPECT_EQ(raw->List(records).size(), 1u) << "records of returned Adds are left in etcd";
  // Adds from many threads at once: each thread's last record may wait for a later Add.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) s->Add("shared", 1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(s->Get("shared", milliseconds(0)), "40");
  EXPECT_LE(raw->List(records).size(), 4u);
  EXPECT_EQ(s->Add("shared", 1), 41);
  EXPECT_EQ(raw->List(records).size(), 1u);
  EXPECT_EQ(s->List("").size(), 3u);  // odd, even, shared: the records stay out of List
}

TEST_F(EtcdStoreTest, SelectedByCohortStoreWithTheEtcdScheme) {
  cohort::testing::ScopedEnv env({{"COHORT_STORE", "etcd://" + etcd_->endpoint()},
                                  {"COHORT_RUN_ID", "from-env"},
                                  {"MASTER_ADDR", std::nullopt},
                                  {"MASTER_PORT", std::nullopt}});
  EXPECT_EQ(ReadStoreEnv().address, "etcd://" + etcd_->endpoint());
  auto s = ConnectStoreFromEnv();
  s->Set("k", "v");
  EXPECT_EQ(Store("")->Get("cohort/from-env/k", milliseconds(0)), "v");
}

TEST_F(EtcdStoreTest, LostEtcdIsNamedWithinSeconds) {
  auto s = Store(EtcdStore::KeyPrefix("lost"));
  s->Set("k", "v");
  etcd_->process().Kill(SIGKILL);
  const auto start = Clock::now();
  const std::string msg = ThrownMessage<Unavailable>([&] { s->Get("k", milliseconds(0)); });
  EXPECT_THAT(msg, HasSubstr(etcd_->endpoint()));
  EXPECT_LT(MillisSince(start), 5000);
}

// Get and Wait watch the key: a put during the wait ends it within milliseconds, however long
// the wait has run (a poll whose step has grown to 100 ms misses this bound most of the time).
TEST_F(EtcdStoreTest, WaitAndGetReturnPromptlyWhenTheKeyIsPutDuringTheWait) {
  auto waiter = Store(EtcdStore::KeyPrefix("prompt"));
  auto setter = Store(EtcdStore::KeyPrefix("prompt"));
  for (int round = 0; round < 4; ++round) {
    const std::string key = "late/" + std::to_string(round);
    std::atomic<int64_t> put_ns{0};
    std::thread t([&] {
      std::this_thread::sleep_for(milliseconds(400));
      setter->Set(key, "v" + std::to_string(round));
      put_ns = Clock::now().time_since_epoch().count();  // the put is committed
    });
    if (round % 2 == 0) {
      waiter->Wait({key}, milliseconds(10000));
    } else {
      EXPECT_EQ(waiter->Get(key, milliseconds(10000)), "v" + std::to_string(round));
    }
    const int64_t done_ns = Clock::now().time_since_epoch().count();
    t.join();  // (the waiter may return before Set does: both follow etcd's commit)
    const double after_put_ms = (done_ns - put_ns) / 1e6;
    EXPECT_LT(after_put_ms, 50) << "round " << round;
  }
}

// A watch broken by etcd's death ends the wait at once with one line naming etcd (not at the
// wait's deadline, and not a hang).
TEST_F(EtcdStoreTest, WaitWhoseWatchBreaksOffEndsInOneLineNamingEtcd) {
  auto s = Store(EtcdStore::KeyPrefix("broken"));
  std::thread killer([&] {
    std::this_thread::sleep_for(milliseconds(300));
    etcd_->process().Kill(SIGKILL);
  });
  const auto start = Clock::now();
  const std::string msg =
      ThrownMessage<Unavailable>([&] { s->Wait({"never"}, milliseconds(30000)); });
  killer.join();
  EXPECT_THAT(msg, HasSubstr("etcd at " + etcd_->endpoint()));
  EXPECT_THAT(msg, HasSubstr("'never'"));
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_LT(MillisSince(start), 5000);
}

TEST(EtcdStoreConnectTest, UnreachableEtcdIsNamedAtTheDeadline) {
  const std::string endpoint = "127.0.0.1:" + std::to_string(net::FreePort());
  EtcdStore s(endpoint, "x/");
  const auto start = Clock::now();
  const std::string msg = ThrownMessage<Unavailable>([&] { s.Connect(milliseconds(1000)); });
  EXPECT_THAT(msg, HasSubstr("cannot reach etcd at " + endpoint + " within 1000 ms"));
  EXPECT_GE(MillisSince(start), 900);
  EXPECT_LT(MillisSince(start), 5000);
}

TEST(StoreBackendsTest, RegistryNamesAndSchemes) {
  EXPECT_EQ(StoreBackendNames(), "grpc, etcd");
  EXPECT_EQ(FindStoreBackend("").name, "grpc");
  EXPECT_TRUE(FindStoreBackend("grpc").hosted_by_launcher);
  EXPECT_FALSE(FindStoreBackend("etcd").hosted_by_launcher);
  EXPECT_THAT(ThrownMessage<InvalidArgument>([] { FindStoreBackend("zk"); }),
              HasSubstr("unknown rendezvous backend 'zk': use one of grpc, etcd"));
  std::string ep;
  EXPECT_EQ(BackendOfAddress("etcd://h:2379", &ep).name, "etcd");
  EXPECT_EQ(ep, "h:2379");
  EXPECT_EQ(BackendOfAddress("h:29500", &ep).name, "grpc");
  EXPECT_EQ(ep, "h:29500");
}

TEST(EtcdApiTest, PutIfTalliesItsSuccessOnATallyKey) {
  const etcd::pb::TxnRequest txn = etcd::PutIf("g/3", {}, "n", "g/tally");
  ASSERT_EQ(txn.compare_size(), 1);
  EXPECT_EQ(txn.compare(0).target(), etcd::pb::Compare::CREATE);
  EXPECT_EQ(txn.compare(0).create_revision(), 0);
  ASSERT_EQ(txn.success_size(), 2);
  EXPECT_EQ(txn.success(0).request_put().key(), "g/3");
  EXPECT_EQ(txn.success(0).request_put().value(), "n");
  EXPECT_EQ(txn.success(1).request_put().key(), "g/tally");
  EXPECT_TRUE(txn.success(1).request_put().prev_kv());
  ASSERT_EQ(txn.failure_size(), 1);
  EXPECT_EQ(txn.failure(0).request_range().key(), "g/3");
  EXPECT_EQ(etcd::PutIf("g/3", {}, "n").success_size(), 1);
  const auto by_value = etcd::PutIf("k", {etcd::Condition::kValue, "old", 0}, "new");
  EXPECT_EQ(by_value.compare(0).target(), etcd::pb::Compare::VALUE);
  EXPECT_EQ(by_value.compare(0).value(), "old");
  const auto by_revision = etcd::PutIf("k", {etcd::Condition::kModRevision, "", 17}, "new");
  EXPECT_EQ(by_revision.compare(0).target(), etcd::pb::Compare::MOD);
  EXPECT_EQ(by_revision.compare(0).mod_revision(), 17);

  // The tally's previous version counts the successes before this one; its first put has none.
  etcd::pb::TxnResponse fifth;
  fifth.set_succeeded(true);
  fifth.mutable_header()->set_revision(30);
  fifth.add_responses()->mutable_response_put();
  fifth.add_responses()->mutable_response_put()->mutable_prev_kv()->set_version(4);
  const auto r = etcd::ParsePutIf(fifth);
  EXPECT_TRUE(r.succeeded);
  EXPECT_EQ(r.count, 5);
  EXPECT_EQ(r.revision, 30);
  etcd::pb::TxnResponse first;
  first.set_succeeded(true);
  first.add_responses()->mutable_response_put();
  first.add_responses()->mutable_response_put();
  EXPECT_EQ(etcd::ParsePutIf(first).count, 1);
}

// A counter's txn: on success it puts the key and its record and deletes the spent records; on
// failure it reads the key and the record, and deletes nothing.
TEST(EtcdApiTest, PutIfRecordedPutsItsRecordAndDeletesTheSpentOnesOnlyOnSuccess) {
  const etcd::pb::TxnRequest txn =
      etcd::PutIfRecorded("n", {}, "6", "rec/a-2", {"rec/a-0", "rec/a-1"});
  ASSERT_EQ(txn.success_size(), 4);
  EXPECT_EQ(txn.success(0).request_put().key(), "n");
  EXPECT_EQ(txn.success(1).request_put().key(), "rec/a-2");
  EXPECT_EQ(txn.success(1).request_put().value(), "6");
  EXPECT_EQ(txn.success(2).request_delete_range().key(), "rec/a-0");
  EXPECT_EQ(txn.success(3).request_delete_range().key(), "rec/a-1");
  EXPECT_TRUE(txn.success(2).request_delete_range().range_end().empty());  // that key alone
  ASSERT_EQ(txn.failure_size(), 2);
  EXPECT_EQ(txn.failure(0).request_range().key(), "n");
  EXPECT_EQ(txn.failure(1).request_range().key(), "rec/a-2");
  EXPECT_EQ(etcd::PutIfRecorded("n", {}, "6", "rec/a-2").success_size(), 2);
}

TEST(EtcdApiTest, AFailedTxnReadsTheKeyOrSaysItsAnswerIsBroken) {
  etcd::pb::TxnResponse taken;
  auto* kv = taken.add_responses()->mutable_response_range()->add_kvs();
  kv->set_key("k");
  kv->set_value("theirs");
  kv->set_mod_revision(7);
  const auto r = etcd::ParsePutIf(taken);
  EXPECT_FALSE(r.succeeded);
  ASSERT_TRUE(r.current);
  EXPECT_EQ(r.current->value, "theirs");
  EXPECT_EQ(r.current->mod_revision, 7);
  etcd::pb::TxnResponse gone;
  gone.add_responses()->mutable_response_range();
  EXPECT_FALSE(etcd::ParsePutIf(gone).current);
  EXPECT_THAT(ThrownMessage<DataLoss>([] { etcd::ParsePutIf(etcd::pb::TxnResponse()); }),
              HasSubstr("etcd's txn answer has no read of the key"));
}

TEST(EtcdApiTest, WatchRequestAndMessages) {
  const auto w = etcd::WatchFrom("p/k", 42);
  EXPECT_EQ(w.create_request().key(), "p/k");
  EXPECT_EQ(w.create_request().start_revision(), 42);
  etcd::pb::WatchResponse created;
  created.set_created(true);
  EXPECT_TRUE(etcd::ParseWatch(created).puts.empty());
  EXPECT_FALSE(etcd::ParseWatch(created).canceled);
  etcd::pb::WatchResponse events;  // a delete, then a put: only the put counts
  auto* deleted = events.add_events();
  deleted->set_type(etcd::pb::Event::DELETE);
  deleted->mutable_kv()->set_key("a/k");
  auto* put = events.add_events();
  put->mutable_kv()->set_key("a/k");
  put->mutable_kv()->set_value("5");
  put->mutable_kv()->set_mod_revision(11);
  const auto m = etcd::ParseWatch(events);
  ASSERT_EQ(m.puts.size(), 1u);
  EXPECT_EQ(m.puts[0].key, "a/k");
  EXPECT_EQ(m.puts[0].value, "5");
  EXPECT_EQ(m.puts[0].mod_revision, 11);
  etcd::pb::WatchResponse compacted;
  compacted.set_canceled(true);
  compacted.set_compact_revision(7);
  EXPECT_TRUE(etcd::ParseWatch(compacted).canceled);
  EXPECT_EQ(etcd::ParseWatch(compacted).compact_revision, 7);
  EXPECT_EQ(etcd::ParseWatch(compacted).error, "");
  etcd::pb::WatchResponse refused;
  refused.set_canceled(true);
  refused.set_cancel_reason("etcdserver: permission denied");
  EXPECT_EQ(etcd::ParseWatch(refused).error, "etcdserver: permission denied");
}

TEST(EtcdApiTest, PrefixEndCoversExactlyThePrefix) {
  EXPECT_EQ(etcd::PrefixEnd("a/"), "a0");
  EXPECT_EQ(etcd::PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(etcd::PrefixEnd(std::string("\xff", 1)), std::string(1, '\0'));
  const auto range = etcd::PrefixRange("cohort/r/");
  EXPECT_EQ(range.key(), "cohort/r/");
  EXPECT_EQ(range.range_end(), "cohort/r0");
}

}  // namespace
}  // namespace cohort::collectives
