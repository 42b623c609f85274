// PrometheusSink in one process: /metrics fetched over HTTP after reports, op counters and
// checkpoint saves, with the exact values the text exposition must carry; the env contract
// (unset: no sink; a bad port: one error; a busy port: a warning and no sink).
#include "runtime/prometheus_sink.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <optional>
#include <regex>
#include <sstream>
#include <string>

#include "checkpoint/save_stats.h"
#include "collectives/op_counters.h"
#include "common/error.h"
#include "common/net.h"
#include "tests/util/scoped_env.h"

namespace cohort::runtime {
namespace {

using namespace std::chrono_literals;

std::string Scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  if (!res) return "";
  EXPECT_EQ(res->status, 200);
  return res->body;
}

// The value of the sample whose name is exactly name and whose labels include every one of
// labels ("k=\"v\"" pieces); nullopt when there is none.
std::optional<double> Sample(const std::string& text, const std::string& name,
                             const std::vector<std::string>& labels = {}) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t end = line.find_first_of("{ ");
    if (line.compare(0, end, name) != 0 || end != name.size()) continue;
    bool all = true;
    for (const auto& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

TEST(PrometheusSink, ServesReportsCountersAndSaves) {
  const int port = net::FreePort();
  PrometheusSink sink("127.0.0.1", port, 3, nullptr, /*first_step=*/10);
  EXPECT_EQ(sink.port(), port);

  std::string text = Scrape(port);
  ASSERT_FALSE(text.empty()) << "no answer on port " << port;
  // No report yet: no loss series (ranks other than 0 never publish one).
  EXPECT_FALSE(Sample(text, "cohort_loss"));
  EXPECT_TRUE(Sample(text, "cohort_checkpoint_saves_total", {"rank=\"3\""}));

  collectives::OpCounters::Record("unit-test", collectives::OpType::kAllReduce, 4096, 2ms);
  collectives::OpCounters::Record("unit-test", collectives::OpType::kAllReduce, 4096, 3ms);
  collectives::OpCounters::Record("unit-test", collectives::OpType::kBroadcast, 100, 1ms);
  const checkpoint::SaveTotals before = checkpoint::SaveStats::Totals();
  checkpoint::SavedSnapshot saved;
  saved.step = 20;
  saved.shard.size = 1000;
  saved.total_seconds = 0.25;
  checkpoint::SaveStats::RecordSave(saved);
  checkpoint::SaveStats::RecordFailure();

  MetricsRecord r;
  r.step = 30;  // 20 steps since first_step
  r.loss = 0.5;
  r.samples_per_second = 1234;
  r.step_seconds = 0.02;
  sink.Write(r);
  r.step = 35;
  r.loss = 0.25;
  r.step_seconds = 0.2;
  sink.Write(r);

  text = Scrape(port);
  const std::vector<std::string> ar = {"backend=\"unit-test\"", "op=\"allreduce\"", "rank=\"3\""};
  EXPECT_EQ(Sample(text, "cohort_collective_ops_total", ar), 2);
  EXPECT_EQ(Sample(text, "cohort_collective_bytes_total", ar), 8192);
  EXPECT_NEAR(*Sample(text, "cohort_collective_seconds_total", ar), 0.005, 1e-12);
  EXPECT_EQ(Sample(text, "cohort_collective_bytes_total", {"op=\"broadcast\""}), 100);
  EXPECT_EQ(Sample(text, "cohort_checkpoint_saves_total"), before.saves + 1);
  EXPECT_EQ(Sample(text, "cohort_checkpoint_save_failures_total"), before.failures + 1);
  EXPECT_EQ(Sample(text, "cohort_checkpoint_save_bytes_total"), before.bytes + 1000);
  EXPECT_EQ(Sample(text, "cohort_checkpoint_last_save_seconds"), 0.25);
  EXPECT_EQ(Sample(text, "cohort_loss", {"rank=\"3\""}), 0.25);
  EXPECT_EQ(Sample(text, "cohort_samples_per_second"), 1234);
  EXPECT_EQ(Sample(text, "cohort_step"), 35);
  EXPECT_EQ(Sample(text, "cohort_straggler_ratio"), 0);
  // 20 steps at 0.02 s, then 5 at 0.2 s.
  EXPECT_EQ(Sample(text, "cohort_step_seconds_count"), 25);
  EXPECT_NEAR(*Sample(text, "cohort_step_seconds_sum"), 20 * 0.02 + 5 * 0.2, 1e-9);
  EXPECT_EQ(Sample(text, "cohort_step_seconds_bucket", {"le=\"0.01\""}), 0);
  EXPECT_EQ(Sample(text, "cohort_step_seconds_bucket", {"le=\"0.025\""}), 20);
  EXPECT_EQ(Sample(text, "cohort_step_seconds_bucket", {"le=\"0.25\""}), 25);
  EXPECT_EQ(Sample(text, "cohort_step_seconds_bucket", {"le=\"+Inf\""}), 25);
  EXPECT_FALSE(Sample(text, "cohort_ddp_communication_seconds_total"));  // no DDP given
}

TEST(PrometheusSink, BusyPortIsUnavailable) {
  const int port = net::FreePort();
  PrometheusSink first("127.0.0.1", port, 0, nullptr);
  EXPECT_THROW(PrometheusSink("127.0.0.1", port, 0, nullptr), Unavailable);
  PrometheusSink any("127.0.0.1", 0, 0, nullptr);  // port 0: a free one
  EXPECT_GT(any.port(), 0);
  EXPECT_NE(any.port(), port);
  EXPECT_TRUE(Sample(Scrape(any.port()), "cohort_checkpoint_saves_total"));
}

TEST(PrometheusSink, FromEnv) {
  {
    testing::ScopedEnv env({{"COHORT_METRICS_PORT", std::nullopt}});
    EXPECT_EQ(PrometheusSink::FromEnv(nullptr), nullptr);
  }
  {
    testing::ScopedEnv env({{"COHORT_METRICS_PORT", "65535"}, {"COHORT_LOCAL_RANK", "1"}});
    EXPECT_THROW(PrometheusSink::FromEnv(nullptr), InvalidArgument);
  }
  const int port = net::FreePort();
  testing::ScopedEnv env({{"COHORT_METRICS_PORT", std::to_string(port - 2)},
                          {"COHORT_LOCAL_RANK", "2"},
                          {"COHORT_RANK", "6"}});
  auto sink = PrometheusSink::FromEnv(nullptr);
  ASSERT_NE(sink, nullptr);
  EXPECT_EQ(sink->port(), port);
  EXPECT_TRUE(Sample(Scrape(port), "cohort_checkpoint_saves_total", {"rank=\"6\""}));
  // The port is taken now: a second sink is a warning and no sink, not an error.
  EXPECT_EQ(PrometheusSink::FromEnv(nullptr), nullptr);
}

}  // namespace
}  // namespace cohort::runtime
