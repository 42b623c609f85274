// The training job of the elastic tests (examples' fashion_mnist, checkpointing), and the check
// that it went through every elastic change without losing steps: rank 0's metrics log
// (--metrics with --progress-interval 0: one JSON line per step, appended across rounds) and
// the "resumed from step N" lines its rank 0 prints. Header-only.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::testing {

inline const std::string kFashionData = "/usr/share/datasets/fashion-mnist";

// Why fashion_mnist cannot train here, or "".
inline std::string FashionMnistUnavailable() {
  if (!std::filesystem::exists(BinPath("fashion_mnist"))) {
    return "fashion_mnist is not built (a libtorch build: COHORT_WITH_TORCH)";
  }
  if (!std::filesystem::exists(kFashionData + "/train-images-idx3-ubyte.gz")) {
    return kFashionData + " is missing: apt-get install dataset-fashion-mnist";
  }
  return "";
}

// fashion_mnist for `steps` steps of batch 32, a metrics line per step into `metrics` (rank 0),
// a snapshot every `every` steps (where `cohort launch --checkpoint-uri` points).
inline std::vector<std::string> FashionMnistJob(int steps, int every, const std::string& metrics) {
  return {BinPath("fashion_mnist"),
          "--max-steps",
          std::to_string(steps),
          "--batch-size",
          "32",
          "--progress-interval",
          "0",
          "--metrics",
          metrics,
          "--checkpoint-every",
          std::to_string(every)};
}

// The "step" of every line of a metrics log, in file order.
// The launch flags of the elastic tests: --nnodes 2:3 of 2 workers, a short last call and
// grace period, snapshots in dir.
inline std::vector<std::string> ElasticFlags(const TestDir& dir, const std::string& restarts) {
  return {"--nnodes",         "2:3",        "--nproc-per-node", "2", "--rdzv-last-call", "1",
          "--rdzv-timeout",   "30",         "--grace-period",   "5", "--max-restarts",   restarts,
          "--checkpoint-uri", dir.Uri("ck")};
}

inline std::vector<int64_t> ReadSteps(const std::string& path) {
  std::vector<int64_t> steps;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto at = line.find("\"step\":");
    if (at != std::string::npos) steps.push_back(std::stoll(line.substr(at + 7)));
  }
  return steps;
}

// Waits until the metrics log has reached `step`; false after `timeout`.
inline bool AwaitStep(const std::string& metrics, int64_t step, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto steps = ReadSteps(metrics);
    if (!steps.empty() && steps.back() >= step) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The launcher's own lines of output ("[cohort launch ...] ..."), for the test's log.
inline std::string LauncherLines(const std::string& output) {
  std::string lines;
  size_t start = 0;
  for (size_t nl; (nl = output.find('\n', start)) != std::string::npos; start = nl + 1) {
    if (output.compare(start, 14, "[cohort launch") == 0)
      lines += output.substr(start, nl - start + 1);
  }
  return lines;
}

// Every N of "resumed from step N" in output.
inline std::vector<int64_t> ResumedFrom(const std::string& output) {
  std::vector<int64_t> steps;
  const std::string text = "resumed from step ";
  for (size_t at = output.find(text); at != std::string::npos; at = output.find(text, at + 1)) {
    steps.push_back(std::stoll(output.substr(at + text.size())));
  }
  return steps;
}

// "" when the log runs 1..last with every step once, except that a restart that resumed from
// snapshot R repeats the steps after R that ran before it (at most max_repeat of them, and R
// must be a step some rank 0 said it resumed from); otherwise what is wrong.
inline std::string CheckSteps(const std::vector<int64_t>& steps,
                              const std::vector<int64_t>& resumed, int64_t last,
                              int64_t max_repeat) {
  if (steps.empty()) return "the metrics log has no steps";
  if (steps.front() != 1) return fmt::format("the log starts at step {}, not 1", steps.front());
  for (size_t i = 1; i < steps.size(); ++i) {
    if (steps[i] == steps[i - 1] + 1) continue;
    const int64_t from = steps[i] - 1, ran_to = steps[i - 1];
    if (from > ran_to) {
      return fmt::format("steps {}..{} are missing (after step {})", ran_to + 1, from, ran_to);
    }
    if (std::find(resumed.begin(), resumed.end(), from) == resumed.end()) {
      return fmt::format("step {} follows step {}, but no worker resumed from step {}", steps[i],
                         ran_to, from);
    }
    if (ran_to - from > max_repeat) {
      return fmt::format("resuming from step {} repeated {} steps (up to {}); at most {} allowed",
                         from, ran_to - from, ran_to, max_repeat);
    }
  }
  if (steps.back() != last)
    return fmt::format("the log ends at step {}, not {}", steps.back(), last);
  return "";
}

}  // namespace cohort::testing
