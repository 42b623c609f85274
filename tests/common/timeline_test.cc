// common/timeline.h on its own: what a span costs off and on (printed; asserted only loosely,
// speed belongs to bench/), the JSON of events and tracks, and nesting on one thread. One TEST:
// the timeline is switched on once per process (COHORT_TIMELINE is read at the first Init()).
#include "common/timeline.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace cohort::timeline {
namespace {

double NanosPerSpan(int n) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) Span s("x", "bench");
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
         n;
}

TEST(Timeline, OffCostsNothingOnRecordsNestedSpansAndTracks) {
  ASSERT_FALSE(Enabled());
  const double off = NanosPerSpan(1000000);
  EXPECT_EQ(EventsJson(0, 0), "") << "an off timeline records nothing";

  ::setenv("COHORT_TIMELINE", "/tmp/unused.json", 1);
  Init();
  ASSERT_TRUE(Enabled());
  EXPECT_EQ(Path(), "/tmp/unused.json");
  const double on = NanosPerSpan(100000);
  std::printf("span cost: off %.1f ns, on %.0f ns\n", off, on);
  EXPECT_LT(off, 20.0);
  Clear();

  {
    Span outer("step", "train");
    { Span inner("forward", "train"); }
    Complete("allreduce", "comm", 100, 250, "ddp buckets", "\"bytes\": 64");
  }
  std::thread([] { Span s("checkpoint write", "checkpoint", "checkpoint writer"); }).join();
  const std::string json = EventsJson(3, 100);
  EXPECT_NE(json.find(R"({"ph":"M","name":"process_name","pid":3,"args":{"name":"rank 3"}})"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find(R"("name":"main")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("args":{"name":"ddp buckets"})"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("args":{"name":"checkpoint writer"})"), std::string::npos) << json;
  // Shifted by the offset: ts 100 - 100.
  EXPECT_NE(
      json.find(
          R"("name":"allreduce","cat":"comm","pid":3,"tid":1,"ts":0,"dur":150,"args":{"bytes": 64})"),
      std::string::npos)
      << json;
  // The inner span ends (and is recorded) before the outer one, inside it.
  EXPECT_LT(json.find(R"("name":"forward")"), json.find(R"("name":"step")")) << json;
}

}  // namespace
}  // namespace cohort::timeline
