// The state the crash-safety test saves: what rank r holds at step s, so that any snapshot can
// be checked against the step it claims. Header-only, shared by the saver and the test.
#pragma once

#include <fmt/format.h>

#include <cstring>
#include <string>

#include "checkpoint/shard.h"

namespace cohort::checkpoint::testing {

inline HostTensor CrashTensor(const std::string& name, size_t count, uint64_t seed) {
  HostTensor t =
      HostTensor::Allocate(name, collectives::DType::kInt64, {static_cast<int64_t>(count)});
  auto* p = static_cast<int64_t*>(t.mutable_data());
  for (size_t i = 0; i < count; ++i) p[i] = static_cast<int64_t>(seed * 1000003 + i);
  return t;
}

// About kib KiB: on rank 0 a large "model" tensor and a small one; on every rank its RNG blob
// and sampler position.
inline Shard MakeCrashShard(int64_t step, int rank, size_t kib) {
  Shard s;
  s.step = step;
  s.epoch = step / 5;
  const uint64_t seed = static_cast<uint64_t>(step) * 16 + static_cast<uint64_t>(rank);
  s.tensors.push_back(CrashTensor("model/w", kib * 128, seed));
  s.tensors.push_back(CrashTensor("optimizer/0/exp_avg", 97, seed + 7));
  s.attributes["rng"] = Blob{std::vector<uint8_t>(64, static_cast<uint8_t>(seed))};
  s.attributes["sampler.position"] = static_cast<int64_t>(seed);
  return s;
}

// "" when got is exactly MakeCrashShard(step, rank, kib), else what differs.
inline std::string CompareCrashShard(const Shard& got, int64_t step, int rank, size_t kib) {
  const Shard want = MakeCrashShard(step, rank, kib);
  if (got.step != want.step || got.epoch != want.epoch) return fmt::format("step {}", got.step);
  if (got.attributes != want.attributes) return "attributes differ";
  if (got.tensors.size() != want.tensors.size()) return "tensor count differs";
  for (const HostTensor& w : want.tensors) {
    const HostTensor* g = got.Find(w.name());
    if (g == nullptr) return w.name() + " missing";
    if (g->shape() != w.shape() || g->dtype() != w.dtype() ||
        std::memcmp(g->data(), w.data(), w.nbytes()) != 0) {
      return w.name() + " differs";
    }
  }
  return "";
}

}  // namespace cohort::checkpoint::testing
