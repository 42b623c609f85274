// DistributedSampler: which examples each rank trains on, per epoch. A seeded shuffle of
// [0, size) per epoch (the same on every rank), cut into equal shares: padded by repeating from
// the start, or with drop_last the tail is dropped. Rank r takes every world-th index starting at
// r (PyTorch's DistributedSampler layout). The position within an epoch can be saved and
// restored, so a resumed job continues with the next unseen batch. No libtorch here:
// runtime/torch_sampler.h adapts it to torch::data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cohort::runtime {

struct SamplerState {
  int64_t epoch = 0;
  size_t position = 0;  // indices of this epoch already handed out on this rank
  uint64_t seed = 0;
};

class DistributedSampler {
 public:
  // Throws InvalidArgument for world < 1, rank outside [0, world), an empty dataset, or
  // drop_last with fewer examples than ranks.
  DistributedSampler(size_t dataset_size, int rank, int world, bool shuffle = true,
                     uint64_t seed = 0, bool drop_last = false);

  // Starts epoch e: reshuffles and rewinds the position to 0.
  void SetEpoch(int64_t epoch);
  int64_t Epoch() const { return state_.epoch; }
  // Indices of this rank for the current epoch, all of them (ignores the position).
  const std::vector<size_t>& Indices() const { return indices_; }
  // Up to n next indices of this epoch; empty when the epoch is done.
  std::vector<size_t> Next(size_t n);
  // Indices per rank per epoch.
  size_t ShareSize() const { return indices_.size(); }
  size_t DatasetSize() const { return size_; }
  int Rank() const { return rank_; }
  int World() const { return world_; }

  SamplerState State() const { return state_; }
  // Restores a saved state. The dataset size and world may differ from the saving run's; the
  // position is then mapped to the same share of the epoch (samples seen by all ranks together).
  void Restore(const SamplerState& state, int saved_world);

 private:
  void Build();

  size_t size_;
  int rank_;
  int world_;
  bool shuffle_;
  bool drop_last_;
  SamplerState state_;
  std::vector<size_t> indices_;
};

}  // namespace cohort::runtime
