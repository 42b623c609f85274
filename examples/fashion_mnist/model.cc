#include "examples/fashion_mnist/model.h"

#include <torch/nn/functional/pooling.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

namespace cohort::examples {

class FashionCnn : public torch::nn::Module {
 public:
  FashionCnn()
      : conv1_(register_module("conv1",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1)))),
        conv2_(register_module("conv2",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)))),
        fc1_(register_module("fc1", torch::nn::Linear(32 * 7 * 7, 128))),
        fc2_(register_module("fc2", torch::nn::Linear(128, 10))) {}

  at::Tensor forward(at::Tensor x) {
    namespace F = torch::nn::functional;
    x = F::max_pool2d(conv1_->forward(x).relu(), F::MaxPool2dFuncOptions(2));  // 16 x 14 x 14
    x = F::max_pool2d(conv2_->forward(x).relu(), F::MaxPool2dFuncOptions(2));  // 32 x 7 x 7
    x = fc1_->forward(x.flatten(1)).relu();
    return fc2_->forward(x);
  }

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::Conv2d conv2_;
  torch::nn::Linear fc1_;
  torch::nn::Linear fc2_;
};

std::shared_ptr<FashionCnn> MakeFashionCnn() { return std::make_shared<FashionCnn>(); }

std::shared_ptr<torch::nn::Module> AsModule(const std::shared_ptr<FashionCnn>& model) {
  return model;
}

at::Tensor Forward(FashionCnn& model, const at::Tensor& images) { return model.forward(images); }

}  // namespace cohort::examples
