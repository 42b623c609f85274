#include "runtime/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "common/error.h"

namespace cohort::runtime {
namespace {

// A uniform integer in [0, bound) from gen, without modulo bias. Written out rather than
// std::uniform_int_distribution, whose algorithm differs between standard libraries: every rank
// (and every restart, whatever it was built with) must derive the same permutation.
uint64_t Uniform(std::mt19937_64& gen, uint64_t bound) {
  // Values below 2^64 mod bound would make the low residues likelier; redraw those.
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = gen();
    if (r >= threshold) return r % bound;
  }
}

// Fisher-Yates with the generator above.
void Shuffle(std::vector<size_t>& v, uint64_t seed) {
  std::mt19937_64 gen(seed);
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(Uniform(gen, i));
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace

DistributedSampler::DistributedSampler(size_t dataset_size, int rank, int world, bool shuffle,
                                       uint64_t seed, bool drop_last)
    : size_(dataset_size), rank_(rank), world_(world), shuffle_(shuffle), drop_last_(drop_last) {
  if (world < 1) {
    throw InvalidArgument(
        fmt::format("DistributedSampler: world size is {}; it must be at least 1", world));
  }
  if (rank < 0 || rank >= world) {
    throw InvalidArgument(fmt::format(
        "DistributedSampler: rank {} is outside the world of {} (valid: 0..{}); pass the process "
        "group's Rank() and Size()",
        rank, world, world - 1));
  }
  // An empty share would make every epoch a silent no-op: refuse it instead.
  if (dataset_size == 0) {
    throw InvalidArgument(
        "DistributedSampler: the dataset is empty (size 0); check the data path and that the "
        "dataset loaded");
  }
  if (drop_last && dataset_size < static_cast<size_t>(world)) {
    throw InvalidArgument(fmt::format(
        "DistributedSampler: drop_last with {} examples and {} ranks leaves every rank nothing; "
        "use fewer ranks or drop_last=false (which pads by repeating examples)",
        dataset_size, world));
  }
  state_.seed = seed;
  Build();
}

void DistributedSampler::SetEpoch(int64_t epoch) {
  state_.epoch = epoch;
  state_.position = 0;
  Build();
}

void DistributedSampler::Build() {
  std::vector<size_t> all(size_);
  std::iota(all.begin(), all.end(), size_t{0});
  // seed + epoch, as PyTorch's DistributedSampler: a new order each epoch, reproducible.
  if (shuffle_) Shuffle(all, state_.seed + static_cast<uint64_t>(state_.epoch));

  const size_t w = static_cast<size_t>(world_);
  const size_t share = drop_last_ ? size_ / w : (size_ + w - 1) / w;
  const size_t total = share * w;
  // Pad by repeating from the start (possibly several times over, when size < world).
  all.reserve(total);
  for (size_t i = 0; all.size() < total; ++i) all.push_back(all[i]);
  all.resize(total);

  indices_.clear();
  indices_.reserve(share);
  for (size_t i = static_cast<size_t>(rank_); i < total; i += w) indices_.push_back(all[i]);
}

std::vector<size_t> DistributedSampler::Next(size_t n) {
  const size_t begin = std::min(state_.position, indices_.size());
  const size_t end = begin + std::min(n, indices_.size() - begin);
  state_.position = end;
  return std::vector<size_t>(indices_.begin() + static_cast<std::ptrdiff_t>(begin),
                             indices_.begin() + static_cast<std::ptrdiff_t>(end));
}

void DistributedSampler::Restore(const SamplerState& state, int saved_world) {
  if (saved_world < 1) {
    throw InvalidArgument(fmt::format(
        "DistributedSampler::Restore: the saved world size is {}; it must be at least 1 (the "
        "world size of the run that saved the state)",
        saved_world));
  }
  state_.seed = state.seed;
  state_.epoch = state.epoch;
  Build();
  // The saving run's ranks together consumed the first position * saved_world entries of this
  // epoch's permutation (rank r takes entries r, r + world, ...), and the permutation does not
  // depend on the world: continuing after floor(that / world) entries per rank repeats at most
  // world - 1 samples and skips none. A product that overflows is past any epoch's end.
  uint64_t seen = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(state.position),
                             static_cast<uint64_t>(saved_world), &seen)) {
    state_.position = indices_.size();
    return;
  }
  state_.position =
      std::min(static_cast<size_t>(seen / static_cast<uint64_t>(world_)), indices_.size());
}

}  // namespace cohort::runtime
