// Debian's real Prometheus server scraping a fashion_mnist job (2 workers under `cohort launch`)
// every second on loopback; its HTTP API (/api/v1/query) must return the job's series with real
// values: loss, steps in the step-time histogram, samples/s, all-reduce bytes and seconds on
// both ranks, DDP communication time, checkpoint saves and bytes, heartbeat age; and the
// launcher's (port - 1): restarts, attempt, workers, each rank's heartbeat age. Skipped, with
// the reason, when prometheus is not installed or does not become ready. And --katib-metrics:
// the final metrics as name=value lines, as Katib's StdOut collector parses them.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/net.h"
#include "tests/util/subprocess.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
constexpr const char* kPrometheus = "/usr/bin/prometheus";

// The values of an instant query, by the series' rank label ("" when it has none); empty when
// the query failed or matched nothing.
std::map<std::string, double> Query(int port, const std::string& promql) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(5, 0);
  auto res = client.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
  std::map<std::string, double> out;
  if (!res || res->status != 200) return out;
  const auto body = nlohmann::json::parse(res->body, nullptr, false);
  if (body.is_discarded() || body.value("status", "") != "success") return out;
  for (const auto& r : body["data"]["result"]) {
    const std::string rank = r["metric"].value("rank", "");
    out[rank] = std::stod(r["value"][1].get<std::string>());
  }
  return out;
}

bool Ready(int port) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/-/ready");
  return res && res->status == 200;
}

std::map<std::string, std::string> TrainEnv(const fs::path& dir, int metrics_port) {
  return {{"COHORT_METRICS_PORT", std::to_string(metrics_port)},
          {"COHORT_CHECKPOINT_URI", "file://" + (dir / "ckpt").string()},
          {"COHORT_RESUME", ""},
          {"MLFLOW_TRACKING_URI", ""},
          {"OPENBLAS_NUM_THREADS", "1"},
          {"OMP_NUM_THREADS", "1"}};
}

class PrometheusScrape : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("cohort-prometheus-{}", getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  // Starts prometheus scraping targets ("127.0.0.1:port") every second; "" when it is ready,
  // else why it could not start (the test skips with it).
  std::string StartPrometheus(const std::vector<int>& ports) {
    if (access(kPrometheus, X_OK) != 0) {
      return std::string(kPrometheus) +
             " is not installed (scripts/setup installs Debian's prometheus)";
    }
    std::string targets;
    for (int p : ports) targets += fmt::format("{}'127.0.0.1:{}'", targets.empty() ? "" : ", ", p);
    const fs::path config = dir_ / "prometheus.yml";
    std::ofstream(config) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                          << "scrape_configs:\n  - job_name: cohort\n    static_configs:\n"
                          << "      - targets: [" << targets << "]\n";
    prom_port_ = net::FreePort();
    prom_ = std::make_unique<Subprocess>(
        std::vector<std::string>{kPrometheus, "--config.file=" + config.string(),
                                 fmt::format("--web.listen-address=127.0.0.1:{}", prom_port_),
                                 "--storage.tsdb.path=" + (dir_ / "tsdb").string(),
                                 "--log.level=warn"},
        std::map<std::string, std::string>{});
    const auto ready_by = std::chrono::steady_clock::now() + 20s;
    while (!Ready(prom_port_) && std::chrono::steady_clock::now() < ready_by) {
      std::this_thread::sleep_for(200ms);
    }
    if (!Ready(prom_port_)) return "prometheus did not become ready:\n" + prom_->Output();
    // Its discovery hands static targets to the scrapers a few seconds after start: wait until
    // every target has an `up` sample (0 while nothing listens there yet).
    const auto scraping_by = std::chrono::steady_clock::now() + 20s;
    while (Query(prom_port_, "count(up)")[""] < static_cast<double>(ports.size()) &&
           std::chrono::steady_clock::now() < scraping_by) {
      std::this_thread::sleep_for(200ms);
    }
    return "";
  }

  fs::path dir_;
  std::unique_ptr<Subprocess> prom_;
  int prom_port_ = 0;
};

// Every series of the issue, as max_over_time so that samples scraped before the job ended
// count (an instant query past the end sees Prometheus's staleness markers).
const std::vector<std::string> kSeries = {
    "cohort_loss",
    "cohort_samples_per_second",
    "cohort_step_seconds_count",
    "cohort_collective_bytes_total{op=\"allreduce\"}",
    "cohort_collective_seconds_total{op=\"allreduce\"}",
    "cohort_ddp_communication_seconds_total",
    "cohort_ddp_exposed_communication_seconds_total",
    "cohort_checkpoint_saves_total",
    "cohort_checkpoint_save_bytes_total",
    "cohort_checkpoint_save_seconds_total",
    "cohort_checkpoint_save_failures_total",
    "cohort_heartbeat_age_seconds",
    "cohort_launcher_heartbeat_age_seconds",
};

std::string OverTime(const std::string& series) { return "max_over_time(" + series + "[5m])"; }

TEST_F(PrometheusScrape, SeesTheTrainingJobsSeries) {
  // The launcher at base - 1, the workers at base + local rank: a block below the ephemeral range,
  // where a gloo or scrape connection's local port cannot take one first (CI once lost base + 1).
  const int base = net::FreePortRange(3) + 1;
  if (const std::string why = StartPrometheus({base - 1, base, base + 1}); !why.empty()) {
    GTEST_SKIP() << why;
  }
  const int prom_port = prom_port_;

  Subprocess train({BinPath("cohort"), "launch", "--nproc-per-node", "2", "--run-id", "prom", "--",
                    BinPath("fashion_mnist"), "--epochs", "1", "--progress-interval", "0.2",
                    "--checkpoint-every", "20"},
                   TrainEnv(dir_, base));
  // Until every series has a sample on the ranks it should (or 40 s pass).
  auto complete = [&] {
    for (const auto& s : kSeries) {
      const size_t ranks = (s == "cohort_loss" || s == "cohort_samples_per_second" ||
                            s == "cohort_step_seconds_count")
                               ? 1
                               : 2;
      if (Query(prom_port, OverTime(s)).size() < ranks) return false;
    }
    return Query(prom_port, OverTime("cohort_checkpoint_saves_total") + " > 0").size() == 2;
  };
  const auto deadline = std::chrono::steady_clock::now() + 40s;
  while (!complete() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(500ms);
  }
  train.Kill(SIGTERM);  // enough seen: end the job early (a SIGTERM'd job saves and exits)
  const ProcessResult result = train.Wait(30s);
  EXPECT_FALSE(result.timed_out) << result.output;

  auto value = [&](const std::string& series, const std::string& rank) {
    const auto v = Query(prom_port, OverTime(series));
    const auto it = v.find(rank);
    EXPECT_NE(it, v.end()) << series << " has no sample for rank " << rank << "\n" << result.output;
    return it == v.end() ? -1.0 : it->second;
  };
  const double loss = value("cohort_loss", "0");
  EXPECT_GT(loss, 0);
  EXPECT_LT(loss, 5);  // cross-entropy over 10 classes starts near ln(10) = 2.3
  EXPECT_GT(value("cohort_step_seconds_count", "0"), 0);
  EXPECT_GT(value("cohort_step_seconds_sum", "0"), 0);
  EXPECT_GT(value("cohort_samples_per_second", "0"), 0);
  EXPECT_GT(value("cohort_step", "0"), 0);
  for (const std::string rank : {"0", "1"}) {
    SCOPED_TRACE("rank " + rank);
    // DDP's buckets plus the Trainer's report exchange: far more than one float per step.
    EXPECT_GT(value("cohort_collective_bytes_total{op=\"allreduce\"}", rank), 1000);
    EXPECT_GT(value("cohort_collective_seconds_total{op=\"allreduce\"}", rank), 0);
    EXPECT_GT(value("cohort_collective_ops_total{op=\"allreduce\"}", rank), 0);
    EXPECT_GT(value("cohort_ddp_communication_seconds_total", rank), 0);
    EXPECT_GE(value("cohort_ddp_exposed_communication_seconds_total", rank), 0);
    EXPECT_GE(value("cohort_checkpoint_saves_total", rank), 1);
    // Rank 0's shard holds the CNN's weights and Adam's moments; rank 1's only its own RNG.
    EXPECT_GT(value("cohort_checkpoint_save_bytes_total", rank), rank == "0" ? 100000 : 1000);
    EXPECT_GT(value("cohort_checkpoint_save_seconds_total", rank), 0);
    EXPECT_EQ(value("cohort_checkpoint_save_failures_total", rank), 0);
    const double age = value("cohort_heartbeat_age_seconds", rank);
    EXPECT_GE(age, 0);
    EXPECT_LT(age, 10);
  }
  // The launcher and both workers were scraped: `up` is 1 for each target at some point.
  EXPECT_EQ(Query(prom_port, "count(max_over_time(up{job=\"cohort\"}[5m]) == 1)")[""], 3);
  // The launcher: no restarts, attempt 0 with 2 workers, and both workers' heartbeats seen.
  EXPECT_EQ(value("cohort_launcher_restarts_total", ""), 0);
  EXPECT_EQ(value("cohort_launcher_attempt", ""), 0);
  EXPECT_EQ(value("cohort_launcher_workers", ""), 2);
  for (const std::string rank : {"0", "1"}) {
    const double age = value("cohort_launcher_heartbeat_age_seconds", rank);
    EXPECT_GE(age, 0);
    EXPECT_LT(age, 10);
  }
  // The allreduce bytes grow between scrapes: a counter, not a constant.
  EXPECT_GT(
      Query(prom_port, "increase(cohort_collective_bytes_total{op=\"allreduce\"}[5m])").size(), 0u);
}

// A group that fails once and is restarted: the launcher's restart counter goes to 1.
TEST_F(PrometheusScrape, CountsTheLaunchersRestarts) {
  const int base = net::FreePortRange(2) + 1;
  if (const std::string why = StartPrometheus({base - 1}); !why.empty()) GTEST_SKIP() << why;
  // Attempt 0 fails after 2.5 s; attempt 1 lives 3 s (a few scrapes each) and succeeds.
  Subprocess job(
      {BinPath("cohort"), "launch", "--nproc-per-node", "1", "--max-restarts", "1", "--", "/bin/sh",
       "-c", "if [ \"$COHORT_RESTART\" = 0 ]; then sleep 2.5; exit 7; fi; sleep 3"},
      {{"COHORT_METRICS_PORT", std::to_string(base)}});
  const ProcessResult r = job.Wait(60s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto restarts = Query(prom_port_, "max_over_time(cohort_launcher_restarts_total[5m])");
  ASSERT_EQ(restarts.size(), 1u) << r.output;
  EXPECT_EQ(restarts.begin()->second, 1);
  EXPECT_EQ(Query(prom_port_, "max_over_time(cohort_launcher_attempt[5m])")[""], 1);
}

TEST(KatibMetrics, FinalMetricsAsNameValueLines) {
  const ProcessResult r =
      Subprocess({BinPath("cohort"), "launch", "--nproc-per-node", "1", "--",
                  BinPath("fashion_mnist"), "--max-steps", "20", "--katib-metrics"},
                 {{"COHORT_CHECKPOINT_URI", ""},
                  {"MLFLOW_TRACKING_URI", ""},
                  {"COHORT_METRICS_PORT", ""},
                  {"OPENBLAS_NUM_THREADS", "1"},
                  {"OMP_NUM_THREADS", "1"}})
          .Wait(120s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Katib's StdOut collector's default filter, ([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?),
  // here anchored at the line's end (the launcher may prefix worker lines).
  const std::regex pair(R"(([\w-]+)=([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)\s*$)");
  std::map<std::string, double> metrics;
  std::istringstream lines(r.output);
  std::string text;
  std::smatch m;
  while (std::getline(lines, text)) {
    if (std::regex_search(text, m, pair)) metrics[m[1]] = std::stod(m[2]);
  }
  ASSERT_TRUE(metrics.count("loss")) << r.output;
  EXPECT_GT(metrics["loss"], 0);
  EXPECT_LT(metrics["loss"], 5);
  ASSERT_TRUE(metrics.count("test_accuracy")) << r.output;
  EXPECT_GT(metrics["test_accuracy"], 0.1);  // 20 Adam steps beat chance (0.1)
  EXPECT_LE(metrics["test_accuracy"], 1);
  EXPECT_GT(metrics["samples_per_second"], 0);
  EXPECT_EQ(metrics["steps"], 20);
}

}  // namespace
}  // namespace cohort::testing
