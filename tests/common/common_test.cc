#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <regex>

#include "common/check.h"
#include "common/env.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/net.h"
#include "common/utc_time.h"
#include "common/world.h"
#include "tests/util/scoped_env.h"

namespace cohort {
namespace {

using testing::ScopedEnv;

TEST(Env, TypedAccessorsParseAndDefault) {
  ScopedEnv e({{"COHORT_TIMEOUT", "2.5"},
               {"COHORT_RESTART", "3"},
               {"COHORT_DEBUG_COLLECTIVES", "Yes"},
               {"COHORT_RUN_ID", ""}});
  EXPECT_DOUBLE_EQ(env::kTimeout.Seconds(300), 2.5);
  EXPECT_EQ(env::kRestart.Int(0), 3);
  EXPECT_TRUE(env::kDebugCollectives.Bool(false));
  EXPECT_FALSE(env::kRunId.IsSet());  // empty counts as unset
  EXPECT_EQ(env::kRunId.Str("default"), "default");
}

TEST(Env, BadValuesNameTheVariable) {
  ScopedEnv e({{"COHORT_RESTART", "three"},
               {"COHORT_TIMEOUT", "-1"},
               {"COHORT_DEBUG_COLLECTIVES", "maybe"}});
  try {
    env::kRestart.Int(0);
    FAIL();
  } catch (const InvalidArgument& err) {
    EXPECT_NE(std::string(err.what()).find("COHORT_RESTART='three' is not an integer"),
              std::string::npos)
        << err.what();
  }
  EXPECT_THROW(env::kTimeout.Seconds(1), InvalidArgument);
  EXPECT_THROW(env::kDebugCollectives.Bool(false), InvalidArgument);
}

TEST(Env, EveryVariableIsDeclaredOnce) {
  std::set<std::string> names;
  for (const env::Var* v : env::All()) {
    EXPECT_TRUE(names.insert(v->name()).second) << v->name();
    EXPECT_GT(std::string(v->doc()).size(), 5u) << v->name();
  }
  EXPECT_TRUE(names.count("COHORT_STORE"));
  EXPECT_TRUE(names.count("MASTER_PORT"));
}

TEST(Errors, KindsAndChecks) {
  try {
    ThrowError(ErrorKind::kDataLoss, "shard 3 is truncated");
  } catch (const DataLoss& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kDataLoss);
    EXPECT_STREQ(e.what(), "shard 3 is truncated");
  }
  EXPECT_STREQ(ErrorKindName(ErrorKind::kPeerFailure), "peer failure");
  try {
    COHORT_SYSCHECK(::close(-1));
    FAIL();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("::close() failed at tests/common/common_test.cc:"), std::string::npos)
        << what;
    EXPECT_NE(what.find("Bad file descriptor"), std::string::npos) << what;
  }
  // Under ccache with CCACHE_BASEDIR, __FILE__ is relative to the build folder.
  for (const char* file :
       {"../../../tests/common/common_test.cc", "./tests/common/common_test.cc"}) {
    try {
      internal::FailCall(ErrorKind::kInternal, "close(fd)", file, 7, "detail");
      FAIL();
    } catch (const Internal& e) {
      EXPECT_STREQ(e.what(), "close() failed at tests/common/common_test.cc:7: detail") << file;
    }
  }
}

TEST(Net, ParsesHostPort) {
  auto hp = net::ParseHostPort("10.0.0.5:29500", "COHORT_STORE");
  EXPECT_EQ(hp.host, "10.0.0.5");
  EXPECT_EQ(hp.port, 29500);
  EXPECT_EQ(net::ParseHostPort(":80", "x").host, "127.0.0.1");
  auto v6 = net::ParseHostPort("[::1]:5", "x");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.ToString(), "[::1]:5");
  for (const char* bad : {"nohost", "h:", "h:0", "h:70000", "h:12a", "a:b:c"}) {
    try {
      net::ParseHostPort(bad, "COHORT_STORE");
      FAIL() << bad;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("COHORT_STORE='"), std::string::npos) << e.what();
    }
  }
  int p = net::FreePort();
  EXPECT_GT(p, 0);
  EXPECT_LT(p, 65536);
}

TEST(Net, FreePortRangeIsBelowTheEphemeralRangeAndSkipsATakenPort) {
  int ephemeral_low = 0;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low;
  ASSERT_GT(ephemeral_low, 10003);
  for (int i = 0; i < 20; ++i) {
    const int base = net::FreePortRange(3);
    EXPECT_GE(base, 10000);
    EXPECT_LE(base + 3, ephemeral_low);
  }
  // A port someone listens on is never inside a returned block.
  const int held = net::FreePortRange(1);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(held));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  for (int i = 0; i < 20000; ++i) {
    const int base = net::FreePortRange(3);
    ASSERT_FALSE(base <= held && held < base + 3) << base << " covers the held port " << held;
  }
  ::close(fd);
  EXPECT_THROW(net::FreePortRange(0), InvalidArgument);
  EXPECT_THROW(net::FreePortRange(ephemeral_low), InvalidArgument);
}

TEST(Hex, EncodesEveryByteAndRandomHexIsFreshEachTime) {
  const unsigned char bytes[] = {0x00, 0x0f, 0x10, 0xab, 0xff};
  EXPECT_EQ(Hex(bytes, sizeof(bytes)), "000f10abff");
  EXPECT_EQ(Hex(bytes, 0), "");
  const std::string a = RandomHex(16), b = RandomHex(16);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(RandomHex(0), "");
}

TEST(World, DetectsEachSourceInOrder) {
  // Unset every variable DetectWorld reads, so the test machine's own env cannot leak in.
  ScopedEnv clean({{"COHORT_RANK", std::nullopt},
                   {"COHORT_WORLD_SIZE", std::nullopt},
                   {"COHORT_LOCAL_RANK", std::nullopt},
                   {"COHORT_LOCAL_WORLD_SIZE", std::nullopt},
                   {"OMPI_COMM_WORLD_SIZE", std::nullopt},
                   {"OMPI_COMM_WORLD_RANK", std::nullopt},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", std::nullopt},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", std::nullopt},
                   {"WORLD_SIZE", std::nullopt},
                   {"RANK", std::nullopt},
                   {"LOCAL_RANK", std::nullopt},
                   {"LOCAL_WORLD_SIZE", std::nullopt},
                   {"SLURM_NTASKS", std::nullopt}});
  EXPECT_EQ(DetectWorld().source, "default");
  EXPECT_EQ(DetectWorld().size, 1);
  {
    ScopedEnv e(
        {{"WORLD_SIZE", "4"}, {"RANK", "2"}, {"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "2"}});
    auto w = DetectWorld();
    EXPECT_EQ(w.source, "torchrun");
    EXPECT_EQ(w.rank, 2);
    EXPECT_EQ(w.size, 4);
    EXPECT_EQ(w.local_size, 2);
    // Open MPI's variables win over torchrun's.
    ScopedEnv m({{"OMPI_COMM_WORLD_SIZE", "3"},
                 {"OMPI_COMM_WORLD_RANK", "1"},
                 {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                 {"OMPI_COMM_WORLD_LOCAL_SIZE", "3"}});
    EXPECT_EQ(DetectWorld().source, "openmpi");
    EXPECT_EQ(DetectWorld().rank, 1);
    // And COHORT_* wins over both.
    ScopedEnv c({{"COHORT_RANK", "5"}, {"COHORT_WORLD_SIZE", "6"}});
    EXPECT_EQ(DetectWorld().source, "cohort");
    EXPECT_EQ(DetectWorld().rank, 5);
  }
  ScopedEnv bad({{"COHORT_RANK", "6"}, {"COHORT_WORLD_SIZE", "6"}});
  EXPECT_THROW(DetectWorld(), InvalidArgument);
}

TEST(Log, SubsystemAndLevelFilters) {
  {
    ScopedEnv e({{"COHORT_LOG_LEVEL", "warn"}, {"COHORT_LOG_SUBSYS", "store,gloo"}});
    log::Reload();
    EXPECT_TRUE(log::Enabled(log::Subsys::kStore, spdlog::level::warn));
    EXPECT_FALSE(log::Enabled(log::Subsys::kStore, spdlog::level::info));
    EXPECT_FALSE(log::Enabled(log::Subsys::kMpi, spdlog::level::err));
  }
  {
    ScopedEnv e({{"COHORT_LOG_LEVEL", "debug"}, {"COHORT_LOG_SUBSYS", "^store"}});
    log::Reload();
    EXPECT_FALSE(log::Enabled(log::Subsys::kStore, spdlog::level::err));
    EXPECT_TRUE(log::Enabled(log::Subsys::kMpi, spdlog::level::debug));
  }
  {
    ScopedEnv e({{"COHORT_LOG_SUBSYS", "nonsense"}});
    EXPECT_THROW(log::Reload(), InvalidArgument);
  }
  ScopedEnv e({{"COHORT_LOG_LEVEL", std::nullopt}, {"COHORT_LOG_SUBSYS", std::nullopt}});
  log::Reload();
}

TEST(UtcTime, Rfc3339InUtcAtSecondsAndMicroseconds) {
  const std::time_t before = std::time(nullptr);
  const std::string s = UtcNowRfc3339();
  const std::string us = UtcNowRfc3339Micros();
  EXPECT_TRUE(std::regex_match(s, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"))) << s;
  EXPECT_TRUE(std::regex_match(us, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)"))) << us;
  std::tm tm{};
  ASSERT_NE(strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm), nullptr);
  const std::time_t parsed = timegm(&tm);  // UTC, not local time
  EXPECT_GE(parsed, before);
  EXPECT_LE(parsed, before + 2);
}

}  // namespace
}  // namespace cohort
