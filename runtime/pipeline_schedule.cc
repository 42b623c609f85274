#include "runtime/pipeline_schedule.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <limits>

#include "common/error.h"

namespace cohort::runtime {

PipelineSchedule ParsePipelineSchedule(const std::string& text) {
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "gpipe") return PipelineSchedule::kGPipe;
  if (lower == "1f1b") return PipelineSchedule::k1F1B;
  throw InvalidArgument(fmt::format("pipeline schedule '{}' is unknown; pass gpipe or 1f1b", text));
}

const char* PipelineScheduleName(PipelineSchedule schedule) {
  return schedule == PipelineSchedule::kGPipe ? "gpipe" : "1f1b";
}

namespace {

void CheckStage(int stages, int stage, int micro_batches) {
  if (stages < 1 || stage < 0 || stage >= stages) {
    throw InvalidArgument(
        fmt::format("pipeline: stage {} of {} stages is out of range", stage, stages));
  }
  if (micro_batches < 1) {
    throw InvalidArgument(fmt::format("pipeline: {} micro-batches; pass 1 or more", micro_batches));
  }
}

// 1F1B's warm-up: the forwards a stage runs before its first backward, less the one of the
// first steady pair.
int Warmup(int stages, int stage, int micro_batches) {
  return std::min(stages - stage - 1, micro_batches);
}

}  // namespace

std::vector<PipelineAction> MakePipelineSchedule(PipelineSchedule schedule, int stages, int stage,
                                                 int micro_batches) {
  CheckStage(stages, stage, micro_batches);
  using A = PipelineAction;
  std::vector<A> actions;
  actions.reserve(2 * static_cast<size_t>(micro_batches));
  if (schedule == PipelineSchedule::kGPipe) {
    for (int i = 0; i < micro_batches; ++i) actions.push_back({A::kForward, i});
    for (int i = 0; i < micro_batches; ++i) actions.push_back({A::kBackward, i});
    return actions;
  }
  const int warmup = Warmup(stages, stage, micro_batches);
  for (int i = 0; i < warmup; ++i) actions.push_back({A::kForward, i});
  for (int k = 0; k < micro_batches - warmup; ++k) {
    actions.push_back({A::kForward, warmup + k});
    actions.push_back({A::kBackward, k});
  }
  for (int i = micro_batches - warmup; i < micro_batches; ++i) {
    actions.push_back({A::kBackward, i});
  }
  return actions;
}

int PeakInFlight(PipelineSchedule schedule, int stages, int stage, int micro_batches) {
  CheckStage(stages, stage, micro_batches);
  if (schedule == PipelineSchedule::kGPipe) return micro_batches;
  return std::min(micro_batches, Warmup(stages, stage, micro_batches) + 1);
}

double TheoreticalBubble(int stages, int micro_batches) {
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
}

std::vector<int64_t> MicroBatchSizes(int64_t batch, int micro_batches) {
  if (micro_batches < 1) {
    throw InvalidArgument(fmt::format("pipeline: {} micro-batches; pass 1 or more", micro_batches));
  }
  if (batch < micro_batches) {
    throw InvalidArgument(fmt::format(
        "pipeline: a batch of {} rows cannot be cut into {} micro-batches; pass at most {} "
        "micro-batches or a larger batch",
        batch, micro_batches, batch));
  }
  std::vector<int64_t> sizes(static_cast<size_t>(micro_batches), batch / micro_batches);
  for (int64_t i = 0; i < batch % micro_batches; ++i) ++sizes[static_cast<size_t>(i)];
  return sizes;
}

std::vector<int> BalancedBoundaries(const std::vector<int64_t>& layer_params, int stages) {
  const int n = static_cast<int>(layer_params.size());
  if (stages < 1 || n < stages) {
    throw InvalidArgument(fmt::format(
        "pipeline: {} layers cannot be cut into {} stages; every stage needs a layer", n, stages));
  }
  std::vector<int64_t> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + layer_params[i];
  // best[k][i]: the smallest largest stage when the first i layers form k stages.
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> best(stages + 1, std::vector<int64_t>(n + 1, kInf));
  std::vector<std::vector<int>> cut(stages + 1, std::vector<int>(n + 1, 0));
  best[0][0] = 0;
  for (int k = 1; k <= stages; ++k) {
    for (int i = k; i <= n; ++i) {
      for (int j = k - 1; j < i; ++j) {
        if (best[k - 1][j] == kInf) continue;
        const int64_t worst = std::max(best[k - 1][j], prefix[i] - prefix[j]);
        if (worst < best[k][i]) {
          best[k][i] = worst;
          cut[k][i] = j;
        }
      }
    }
  }
  std::vector<int> boundaries(static_cast<size_t>(stages - 1));
  for (int k = stages, i = n; k > 1; --k) {
    i = cut[k][i];
    boundaries[static_cast<size_t>(k - 2)] = i;
  }
  return boundaries;
}

void CheckBoundaries(const std::vector<int>& boundaries, int layers, int stages) {
  bool ok = static_cast<int>(boundaries.size()) == stages - 1;
  for (size_t i = 0; ok && i < boundaries.size(); ++i) {
    const int lo = i == 0 ? 0 : boundaries[i - 1];
    ok = boundaries[i] > lo && boundaries[i] < layers;
  }
  if (!ok) {
    throw InvalidArgument(fmt::format(
        "pipeline: boundaries [{}] do not cut {} layers into {} stages; pass {} increasing cut "
        "points in 1..{} (each the first layer of a stage after the first)",
        fmt::join(boundaries, ", "), layers, stages, stages - 1, layers - 1));
  }
}

}  // namespace cohort::runtime
