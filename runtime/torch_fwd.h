// Forward declarations of the libtorch types runtime/ headers mention, so that these headers stay
// free of libtorch (a TU that includes <torch/torch.h> costs about 20 s and 1 GB to compile).
// Only the .cc files that need the definitions include torch.
#pragma once

namespace at {
class Tensor;
}  // namespace at

namespace torch {
namespace nn {
class Module;
}  // namespace nn
namespace jit {
struct Module;
}  // namespace jit
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch
