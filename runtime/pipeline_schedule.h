// The torch-free half of pipeline parallelism: which forward and backward passes a stage runs in
// which order (GPipe, 1F1B), how a batch splits into micro-batches, how layers are cut into
// stages, and the bubble the schedules leave in theory. runtime/pipeline.h runs the actions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cohort::runtime {

enum class PipelineSchedule {
  kGPipe,  // every micro-batch's forward, then every backward: m activations alive at the peak
  k1F1B,   // warm-up of p - stage - 1 forwards, then one forward one backward: at most p - stage
};

// "gpipe" or "1f1b" (case-insensitive). Throws InvalidArgument naming the accepted values.
PipelineSchedule ParsePipelineSchedule(const std::string& text);
// "gpipe" or "1f1b".
const char* PipelineScheduleName(PipelineSchedule schedule);

// One pass of one micro-batch on one stage.
struct PipelineAction {
  enum Kind { kForward, kBackward };
  Kind kind = kForward;
  int micro = 0;
  bool operator==(const PipelineAction& o) const { return kind == o.kind && micro == o.micro; }
};

// The actions of `stage` (0-based) of `stages` for `micro_batches` micro-batches, in order. In
// both schedules every stage runs the backwards in micro-batch order, so the last action is the
// backward of the last micro-batch everywhere (DDP synchronizes on it). Throws InvalidArgument
// for stages < 1, a stage outside [0, stages) or micro_batches < 1.
std::vector<PipelineAction> MakePipelineSchedule(PipelineSchedule schedule, int stages, int stage,
                                                 int micro_batches);

// How many micro-batches `stage` holds activations of at most (forwarded, not yet backwarded).
int PeakInFlight(PipelineSchedule schedule, int stages, int stage, int micro_batches);

// The idle share of every stage's step when forward and backward take the same time on every
// stage and communication is free: (p - 1) / (m + p - 1).
double TheoreticalBubble(int stages, int micro_batches);

// The rows of each of m micro-batches of a batch of `batch` rows: as torch::tensor_split cuts
// dim 0 (the first batch % m get one row more). Throws InvalidArgument when batch < m (a
// micro-batch would be empty; fix: fewer micro-batches or a larger batch).
std::vector<int64_t> MicroBatchSizes(int64_t batch, int micro_batches);

// Cut points that split layers with these parameter counts into `stages` contiguous, non-empty
// stages whose largest parameter count is as small as possible: stages - 1 increasing indices,
// each the first layer of stage 1, 2, .... Throws InvalidArgument when there are fewer layers
// than stages.
std::vector<int> BalancedBoundaries(const std::vector<int64_t>& layer_params, int stages);

// Throws InvalidArgument unless boundaries holds stages - 1 strictly increasing cut points in
// (0, layers): every stage gets at least one layer.
void CheckBoundaries(const std::vector<int>& boundaries, int layers, int stages);

}  // namespace cohort::runtime
