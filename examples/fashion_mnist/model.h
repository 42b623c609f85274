// The example's model: a small CNN for 28x28 grey images, 10 classes (~206k parameters).
//   conv 1->16 3x3, relu, maxpool 2 -> conv 16->32 3x3, relu, maxpool 2 -> fc 1568->128, relu
//   -> fc 128->10
// The header stays free of libtorch (torch_fwd.h): only model.cc and main.cc compile it.
#pragma once

#include <memory>

#include "runtime/torch_fwd.h"

namespace cohort::examples {

class FashionCnn;

// A new, randomly initialised model (torch's default init, from torch's global generator).
std::shared_ptr<FashionCnn> MakeFashionCnn();
// The same object as a plain module (parameters(), train(), for DDP and the optimizer).
std::shared_ptr<torch::nn::Module> AsModule(const std::shared_ptr<FashionCnn>& model);
// Logits [N, 10] of images [N, 1, 28, 28] (float, normalised).
at::Tensor Forward(FashionCnn& model, const at::Tensor& images);

}  // namespace cohort::examples
