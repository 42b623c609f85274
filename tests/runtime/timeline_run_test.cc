// COHORT_TIMELINE end to end: 3 workers under `cohort launch` (the Trainer with DDP and
// checkpoints) write one Chrome trace, which Python's json module loads and check_timeline.py
// checks: every rank's steps, the nesting of forward/backward/optimizer/ddp wait, one all-reduce
// per step on its own track, the checkpoint phases, and clocks aligned across ranks.
#include <gtest/gtest.h>

#include <string>

#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::testing {
namespace {

using namespace std::chrono_literals;

TEST(Timeline, ThreeRanksWriteOneAlignedNestedTrace) {
  const TestDir dir("timeline");
  const std::string trace = dir.File("trace.json");
  Subprocess p({BinPath("cohort"), "launch", "--nproc-per-node", "3", "--",
                BinPath("ckpt_train_worker"), "--steps", "12", "--global-batch", "12"},
               {{"COHORT_TIMELINE", trace},
                {"COHORT_CHECKPOINT_URI", dir.Uri("ckpt")},
                {"COHORT_CHECKPOINT_EVERY", "4"},
                {"COHORT_LOG_LEVEL", "info"},
                {"OPENBLAS_NUM_THREADS", "1"},
                {"OMP_NUM_THREADS", "1"}});
  const ProcessResult r = p.Wait(120s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("timeline: "), std::string::npos) << r.output;
  Subprocess check({"/usr/bin/python3", COHORT_CHECK_TIMELINE, trace, "3", "12"}, {});
  const ProcessResult c = check.Wait(60s);
  std::printf("%s", c.output.c_str());
  EXPECT_EQ(c.exit_code, 0) << c.output;
  EXPECT_NE(c.output.find("timeline ok: 3 ranks x 12 steps"), std::string::npos) << c.output;
}

}  // namespace
}  // namespace cohort::testing
