// The optimizers a parameter server applies in asynchronous mode, over float buffers, with the
// maths of libtorch 1.13's torch::optim::SGD and torch::optim::Adam (the same as Python's
// torch.optim single-tensor paths): the same order of operations, and the double options
// rounded to float where torch rounds them (a float tensor times a double scalar computes in
// float). So a server's state is interchangeable with a torch optimizer's: a snapshot saves it
// as the torch optimizer's state and a resume pushes that back.
//
//   SGD:  g += wd * p;  buf = first ? g : momentum * buf + (1 - dampening) * g;
//         g = nesterov ? g + momentum * buf : buf  (momentum != 0);  p -= lr * g
//   Adam: t += 1;  g += wd * p;  m = beta1 * m + (1 - beta1) * g;
//         v = beta2 * v + (1 - beta2) * g * g;
//         p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cohort::collectives::ps {

struct AsyncOptimizerConfig {
  enum class Kind { kSgd, kAdam };
  Kind kind = Kind::kSgd;
  double lr = 0.01;
  double momentum = 0;  // SGD
  double dampening = 0;
  bool nesterov = false;
  double weight_decay = 0;  // both
  double beta1 = 0.9;       // Adam
  double beta2 = 0.999;
  double eps = 1e-8;

  // Empty if the options are usable, else one line naming the bad one (torch's own checks:
  // lr >= 0, momentum >= 0, nesterov needs momentum > 0 and dampening 0, betas in [0, 1),
  // eps >= 0, weight_decay >= 0).
  std::string Invalid() const;
};

// One partition's optimizer state: torch's per-parameter state, for a slice of the parameters.
struct AsyncSlots {
  std::vector<float> slot1;  // SGD momentum_buffer / Adam exp_avg; empty until the first step
  std::vector<float> slot2;  // Adam exp_avg_sq
  int64_t steps = 0;         // optimizer steps taken (Adam's t)
};

// One optimizer step of n parameters p with gradient g (which it may overwrite). slots' buffers
// are created at the first step, as torch creates them.
void ApplyOptimizer(const AsyncOptimizerConfig& config, float* p, float* g, size_t n,
                    AsyncSlots& slots);

}  // namespace cohort::collectives::ps
