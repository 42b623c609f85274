#include "collectives/store/store_from_env.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/net.h"
#include "tests/collectives/store/store_test_util.h"

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using testing::ScopedEnv;
using testing::ThrownMessage;

// Every variable ReadStoreEnv looks at, unset; a test then sets the ones it needs.
class StoreFromEnvTest : public ::testing::Test {
 protected:
  ScopedEnv clean_{{"COHORT_STORE", std::nullopt},
                   {"COHORT_TOKEN", std::nullopt},
                   {"COHORT_INSECURE_STORE", std::nullopt},
                   {"COHORT_STORE_TIMEOUT", std::nullopt},
                   {"MASTER_ADDR", std::nullopt},
                   {"MASTER_PORT", std::nullopt},
                   {"COHORT_RANK", std::nullopt},
                   {"RANK", std::nullopt},
                   {"OMPI_COMM_WORLD_RANK", std::nullopt}};
};

TEST_F(StoreFromEnvTest, CohortStoreNamesTheStore) {
  ScopedEnv env({{"COHORT_STORE", "node0:29400"},
                 {"COHORT_TOKEN", "abc"},
                 {"COHORT_STORE_TIMEOUT", "2.5"},
                 {"MASTER_ADDR", "ignored"},
                 {"MASTER_PORT", "1"},
                 {"RANK", "0"}});
  StoreEnv e = ReadStoreEnv();
  EXPECT_EQ(e.address, "node0:29400");
  EXPECT_EQ(e.token, "abc");
  EXPECT_EQ(e.connect_timeout, milliseconds(2500));
  EXPECT_FALSE(e.host_server);  // COHORT_STORE wins over MASTER_*
}

TEST_F(StoreFromEnvTest, DefaultsAndBadValues) {
  {
    ScopedEnv env({{"COHORT_STORE", ":29400"}});
    StoreEnv e = ReadStoreEnv();
    EXPECT_EQ(e.address, "127.0.0.1:29400");
    EXPECT_EQ(e.token, "");
    EXPECT_EQ(e.connect_timeout, milliseconds(60000));
  }
  {
    ScopedEnv env({{"COHORT_STORE", "node0"}});
    EXPECT_THAT(ThrownMessage<InvalidArgument>([] { ReadStoreEnv(); }), HasSubstr("COHORT_STORE"));
  }
  {
    ScopedEnv env({{"COHORT_STORE", "node0:1"}, {"COHORT_STORE_TIMEOUT", "soon"}});
    EXPECT_THAT(ThrownMessage<InvalidArgument>([] { ReadStoreEnv(); }),
                HasSubstr("COHORT_STORE_TIMEOUT"));
  }
}

TEST_F(StoreFromEnvTest, NothingSetSaysWhatToSet) {
  auto msg = ThrownMessage<InvalidArgument>([] { ReadStoreEnv(); });
  EXPECT_THAT(msg, HasSubstr("COHORT_STORE"));
  EXPECT_THAT(msg, HasSubstr("MASTER_ADDR"));
  ScopedEnv env({{"MASTER_ADDR", "node0"}});
  EXPECT_THAT(ThrownMessage<InvalidArgument>([] { ReadStoreEnv(); }), HasSubstr("MASTER_PORT"));
}

TEST_F(StoreFromEnvTest, MasterAddrPortMakeRankZeroTheHost) {
  ScopedEnv env({{"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29500"}});
  EXPECT_THAT(ThrownMessage<InvalidArgument>([] { ReadStoreEnv(); }), HasSubstr("COHORT_RANK"));
  {
    ScopedEnv rank({{"RANK", "0"}});
    StoreEnv e = ReadStoreEnv();
    EXPECT_EQ(e.address, "node0:29500");
    EXPECT_TRUE(e.host_server);
    EXPECT_EQ(e.host_port, 29500);
  }
  {
    ScopedEnv rank({{"OMPI_COMM_WORLD_RANK", "3"}});
    EXPECT_FALSE(ReadStoreEnv().host_server);
  }
  {
    ScopedEnv rank({{"COHORT_RANK", "2"}, {"RANK", "0"}});  // COHORT_RANK comes first
    EXPECT_FALSE(ReadStoreEnv().host_server);
  }
}

TEST_F(StoreFromEnvTest, RankZeroHostsAndEveryoneConnects) {
  const int port = net::FreePort();
  ScopedEnv env({{"MASTER_ADDR", "127.0.0.1"},
                 {"MASTER_PORT", std::to_string(port)},
                 {"COHORT_TOKEN", "tok"},
                 {"COHORT_STORE_TIMEOUT", "3"}});
  std::shared_ptr<Store> rank0, rank1;
  {
    ScopedEnv rank({{"COHORT_RANK", "0"}});
    rank0 = ConnectStoreFromEnv();
  }
  {
    ScopedEnv rank({{"COHORT_RANK", "1"}});
    rank1 = ConnectStoreFromEnv();
  }
  rank1->Set("hello", "from 1");
  EXPECT_EQ(rank0->Get("hello", milliseconds(1000)), "from 1");
  EXPECT_EQ(rank0->Add("n", 1) + rank1->Add("n", 1), 3);

  // The server lives as long as rank 0's handle.
  rank0.reset();
  ThrownMessage<Unavailable>([&] { rank1->Get("hello", milliseconds(0)); });
}

// No open doors: rank 0 hosting for other machines (MASTER_ADDR not loopback) needs a token.
TEST_F(StoreFromEnvTest, RankZeroRefusesToServeTheNetworkWithoutAToken) {
  ScopedEnv env({{"MASTER_ADDR", "192.0.2.1"},  // TEST-NET-1: not this machine, not loopback
                 {"MASTER_PORT", std::to_string(net::FreePort())},
                 {"COHORT_RANK", "0"},
                 {"COHORT_STORE_TIMEOUT", "3"}});
  const std::string msg = ThrownMessage<InvalidArgument>([] { ConnectStoreFromEnv(); });
  EXPECT_THAT(msg, HasSubstr("without COHORT_TOKEN"));
  EXPECT_THAT(msg, HasSubstr("COHORT_INSECURE_STORE=1"));
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  {
    ScopedEnv token({{"COHORT_TOKEN", "tok"}});
    auto store = ConnectStoreFromEnv();
    store->Set("k", "v");
    EXPECT_EQ(store->Get("k", milliseconds(0)), "v");
  }
  {
    ScopedEnv insecure({{"COHORT_INSECURE_STORE", "1"}});
    auto store = ConnectStoreFromEnv();
    EXPECT_EQ(store->Add("n", 2), 2);
  }
}

TEST_F(StoreFromEnvTest, UnreachableCohortStoreFailsWithUnavailable) {
  const std::string address = "127.0.0.1:" + std::to_string(net::FreePort());
  ScopedEnv env({{"COHORT_STORE", address}, {"COHORT_STORE_TIMEOUT", "0.3"}});
  auto msg = ThrownMessage<Unavailable>([] { ConnectStoreFromEnv(); });
  EXPECT_THAT(msg, HasSubstr(address));
}

}  // namespace
}  // namespace cohort::collectives
