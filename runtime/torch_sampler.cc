#include "runtime/torch_sampler.h"

#include <fmt/format.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstring>

#include "common/error.h"

namespace cohort::runtime {
namespace {

constexpr char kEpoch[] = "cohort_sampler/epoch";
constexpr char kPosition[] = "cohort_sampler/position";
constexpr char kSeed[] = "cohort_sampler/seed";
constexpr char kWorld[] = "cohort_sampler/world";

int64_t ReadInt(torch::serialize::InputArchive& archive, const char* key) {
  c10::IValue v;
  if (!archive.try_read(key, v) || !v.isInt()) {
    throw InvalidArgument(
        fmt::format("TorchSampler::load: the archive has no integer '{}'; it was not written by "
                    "TorchSampler::save",
                    key));
  }
  return v.toInt();
}

}  // namespace

TorchSampler::TorchSampler(std::shared_ptr<DistributedSampler> sampler)
    : sampler_(std::move(sampler)) {
  if (!sampler_) throw InvalidArgument("TorchSampler needs a DistributedSampler, got null");
}

void TorchSampler::reset(torch::optional<size_t> new_size) {
  if (new_size && *new_size != sampler_->DatasetSize()) {
    throw InvalidArgument(fmt::format(
        "TorchSampler::reset: the dataset now has {} examples but the sampler was built for {}; "
        "create a new DistributedSampler for the new dataset",
        *new_size, sampler_->DatasetSize()));
  }
  // Only a used-up epoch starts over: a position set by Restore() must survive begin().
  if (sampler_->State().position >= sampler_->ShareSize()) sampler_->SetEpoch(sampler_->Epoch());
}

torch::optional<std::vector<size_t>> TorchSampler::next(size_t batch_size) {
  std::vector<size_t> batch = sampler_->Next(batch_size);
  if (batch.empty()) return torch::nullopt;
  return batch;
}

void TorchSampler::save(torch::serialize::OutputArchive& archive) const {
  const SamplerState s = sampler_->State();
  int64_t seed = 0;
  static_assert(sizeof(seed) == sizeof(s.seed));
  std::memcpy(&seed, &s.seed, sizeof(seed));  // IValue holds signed integers
  archive.write(kEpoch, c10::IValue(s.epoch));
  archive.write(kPosition, c10::IValue(static_cast<int64_t>(s.position)));
  archive.write(kSeed, c10::IValue(seed));
  archive.write(kWorld, c10::IValue(static_cast<int64_t>(sampler_->World())));
}

void TorchSampler::load(torch::serialize::InputArchive& archive) {
  SamplerState s;
  s.epoch = ReadInt(archive, kEpoch);
  const int64_t position = ReadInt(archive, kPosition);
  const int64_t seed = ReadInt(archive, kSeed);
  const int64_t world = ReadInt(archive, kWorld);
  if (position < 0 || world < 1) {
    throw InvalidArgument(fmt::format(
        "TorchSampler::load: the archive holds position {} and world {}; both must be positive "
        "(a damaged or foreign archive)",
        position, world));
  }
  s.position = static_cast<size_t>(position);
  std::memcpy(&s.seed, &seed, sizeof(seed));
  sampler_->Restore(s, static_cast<int>(world));
}

}  // namespace cohort::runtime
