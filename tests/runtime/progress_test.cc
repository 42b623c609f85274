// The Trainer's outputs on their own: the progress line (format, in-place refresh on a terminal,
// plain lines otherwise) and the JSON-lines metrics writer.
#include "runtime/progress.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "runtime/metrics.h"
#include "tests/util/scoped_env.h"

namespace cohort::runtime {
namespace {

std::string Contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  return s;
}

ProgressSnapshot Example() {
  ProgressSnapshot s;
  s.epoch = 0;
  s.epochs = 2;
  s.step = 120;
  s.steps_per_epoch = 469;
  s.samples_per_second = 3412.4;
  s.loss = 0.51234;
  s.has_loss = true;
  s.eta_seconds = 42.2;
  return s;
}

TEST(Progress, FormatsTheLine) {
  EXPECT_EQ(ProgressLine::Format(Example()),
            "epoch 1/2 step 120/469 3412 samples/s loss 0.512 ETA 0:42");
  ProgressSnapshot s = Example();
  s.has_loss = false;
  s.eta_seconds = -1;
  EXPECT_EQ(ProgressLine::Format(s), "epoch 1/2 step 120/469 3412 samples/s loss - ETA -");
  s.has_loss = true;
  s.loss = 0.00012345;
  EXPECT_EQ(ProgressLine::Format(s), "epoch 1/2 step 120/469 3412 samples/s loss 1.23e-04 ETA -");
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(ProgressLine::FormatDuration(0), "0:00");
  EXPECT_EQ(ProgressLine::FormatDuration(42.4), "0:42");
  EXPECT_EQ(ProgressLine::FormatDuration(59.6), "1:00");
  EXPECT_EQ(ProgressLine::FormatDuration(725), "12:05");
  EXPECT_EQ(ProgressLine::FormatDuration(3723), "1:02:03");
  EXPECT_EQ(ProgressLine::FormatDuration(-1), "-");
  EXPECT_EQ(ProgressLine::FormatDuration(std::numeric_limits<double>::infinity()), "-");
  EXPECT_EQ(ProgressLine::FormatDuration(std::nan("")), "-");
}

TEST(Progress, PlainLinesWhenNotATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(ProgressLine::IsTerminal(f));
  {
    ProgressLine line(f, /*tty=*/false);
    ProgressSnapshot s = Example();
    line.Report(s);
    line.Tick(s);  // between reports: nothing in a log
    s.step = 121;
    line.Report(s);
    s.note = "straggler: rank 3 on node 1 at 1.8x the median step time";
    line.Report(s);
    line.EndLine();
  }
  EXPECT_EQ(Contents(f),
            "epoch 1/2 step 120/469 3412 samples/s loss 0.512 ETA 0:42\n"
            "epoch 1/2 step 121/469 3412 samples/s loss 0.512 ETA 0:42\n"
            "epoch 1/2 step 121/469 3412 samples/s loss 0.512 ETA 0:42; straggler: rank 3 on "
            "node 1 at 1.8x the median step time\n");
  std::fclose(f);
}

TEST(Progress, RefreshesInPlaceOnATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressLine line(f, /*tty=*/true, /*refresh=*/0.0);
    ProgressSnapshot s = Example();
    line.Report(s);
    s.samples_per_second = 5;  // 3 characters shorter: the rest is blanked
    line.Tick(s);
    line.EndLine();
    line.EndLine();  // a second one adds nothing
    line.Report(s);
  }  // the destructor ends the open line
  EXPECT_EQ(Contents(f),
            "\repoch 1/2 step 120/469 3412 samples/s loss 0.512 ETA 0:42"
            "\repoch 1/2 step 120/469 5 samples/s loss 0.512 ETA 0:42   \n"
            "\repoch 1/2 step 120/469 5 samples/s loss 0.512 ETA 0:42\n");
  std::fclose(f);
}

TEST(Progress, TerminalTicksAreRateLimited) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressLine line(f, /*tty=*/true, /*refresh=*/3600);
    line.Report(Example());
    for (int i = 0; i < 100; ++i) line.Tick(Example());  // within the hour: no refresh
  }
  const std::string out = Contents(f);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\r'), 1) << out;
  std::fclose(f);
}

TEST(Progress, ModeFromTheEnvironment) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  using testing::ScopedEnv;
  {
    ScopedEnv env({{"COHORT_PROGRESS", std::nullopt}, {"OMPI_COMM_WORLD_RANK", std::nullopt}});
    EXPECT_EQ(ProgressModeFromEnv(file), ProgressMode::kPlain);
  }
  for (const auto& [value, mode] : {std::pair<const char*, ProgressMode>{"off", ProgressMode::kOff},
                                    {"tty", ProgressMode::kTty},
                                    {"plain", ProgressMode::kPlain}}) {
    ScopedEnv env({{"COHORT_PROGRESS", value}});
    EXPECT_EQ(ProgressModeFromEnv(file), mode) << value;
  }
  {
    ScopedEnv env({{"COHORT_PROGRESS", "fancy"}});
    try {
      ProgressModeFromEnv(file);
      ADD_FAILURE() << "no error";
    } catch (const InvalidArgument& e) {
      EXPECT_STREQ(e.what(),
                   "COHORT_PROGRESS=fancy is not a progress mode; use auto, tty, plain or off");
    }
  }
  std::fclose(file);

  // A real terminal (a pseudo-terminal made here): in place, except under mpirun.
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
    GTEST_SKIP() << "no pseudo-terminal available";
  }
  std::FILE* tty = std::fopen(::ptsname(master), "w");
  ASSERT_NE(tty, nullptr);
  EXPECT_TRUE(ProgressLine::IsTerminal(tty));
  {
    ScopedEnv env({{"COHORT_PROGRESS", std::nullopt}, {"OMPI_COMM_WORLD_RANK", std::nullopt}});
    EXPECT_EQ(ProgressModeFromEnv(tty), ProgressMode::kTty);
  }
  {
    ScopedEnv env({{"COHORT_PROGRESS", "auto"}, {"OMPI_COMM_WORLD_RANK", "0"}});
    EXPECT_EQ(ProgressModeFromEnv(tty), ProgressMode::kPlain);
  }
  std::fclose(tty);
  ::close(master);
}

// ---- metrics ----

class TempPath {
 public:
  TempPath()
      : path_(std::filesystem::temp_directory_path() /
              ("cohort-metrics-" + std::to_string(::getpid()) + ".jsonl")) {}
  ~TempPath() { std::filesystem::remove(path_); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::vector<nlohmann::json> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(Metrics, WritesOneJsonObjectPerLine) {
  TempPath path;
  {
    MetricsWriter w(path.str(), /*append=*/false);
    w.Write({1, 0, 2.5, 100, 0.25});
    w.Write({2, 1, std::nan(""), 0, 0.5});  // a diverged loss stays parsable
    // Each line is on disk as soon as it is written.
    EXPECT_EQ(ReadLines(path.str()).size(), 2u);
  }
  auto lines = ReadLines(path.str());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_EQ(lines[0]["epoch"], 0);
  EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(lines[0]["samples_per_second"].get<double>(), 100);
  EXPECT_DOUBLE_EQ(lines[0]["time"].get<double>(), 0.25);
  EXPECT_GT(lines[0]["timestamp"].get<double>(), 1.6e9);
  EXPECT_TRUE(lines[1]["loss"].is_null());
  // A resumed run appends; a new one starts the file over.
  MetricsWriter(path.str(), /*append=*/true).Write({3, 1, 1.0, 1, 1});
  EXPECT_EQ(ReadLines(path.str()).size(), 3u);
  MetricsWriter(path.str(), /*append=*/false).Write({1, 0, 1.0, 1, 1});
  EXPECT_EQ(ReadLines(path.str()).size(), 1u);
}

TEST(Metrics, UnwritablePathIsOneLineWithTheFix) {
  try {
    MetricsWriter w("/nonexistent-dir/metrics.jsonl", false);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cannot write metrics to /nonexistent-dir/metrics.jsonl: No such file"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("writable"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace cohort::runtime
