// TorchSampler: DistributedSampler as a torch::data sampler, for torch::data::make_data_loader.
// This header includes <torch/data/samplers/base.h> (unlike the other runtime/ headers, which
// stay free of libtorch): it exists only for translation units that already use torch::data.
//
//   auto sampler = std::make_shared<DistributedSampler>(dataset.size().value(), pg->Rank(),
//                                                       pg->Size(), /*shuffle=*/true, seed);
//   auto loader = torch::data::make_data_loader(dataset, TorchSampler(sampler), options);
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     sampler->SetEpoch(epoch);              // a new order per epoch
//     for (auto& batch : *loader) { ... }
//   }
//
// The loader takes its sampler by value, so TorchSampler shares the DistributedSampler: the
// caller keeps it for SetEpoch(), State() and Restore(). The loader's begin() calls reset(),
// which keeps the position (so a Restore()d job continues with the next unseen batch) unless
// the epoch is used up, in which case the same epoch starts over. With workers > 0 the loader
// asks for up to max_jobs batches ahead, and State() counts those too.
#pragma once

#include <torch/data/samplers/base.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "runtime/sampler.h"

namespace cohort::runtime {

class TorchSampler : public torch::data::samplers::Sampler<> {
 public:
  // Throws InvalidArgument when sampler is null.
  explicit TorchSampler(std::shared_ptr<DistributedSampler> sampler);

  // new_size: the loader passes none; a different dataset needs a new DistributedSampler, and
  // a size that differs from the sampler's is refused.
  void reset(torch::optional<size_t> new_size = torch::nullopt) override;
  // The next batch_size indices of this rank (fewer at the end), or none once the epoch is done.
  torch::optional<std::vector<size_t>> next(size_t batch_size) override;
  // Epoch, position, seed and this run's world size, under "cohort_sampler/...": load() restores
  // them with DistributedSampler::Restore, so the world may differ.
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  const std::shared_ptr<DistributedSampler>& sampler() const { return sampler_; }

 private:
  std::shared_ptr<DistributedSampler> sampler_;
};

}  // namespace cohort::runtime
