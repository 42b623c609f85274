// Helpers for the checkpoint format tests: tensors with known values, shard comparison, temp
// directories. Header-only.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/shard.h"
#include "common/error.h"
#include "common/half.h"

namespace cohort::checkpoint::testing {

using collectives::DType;

// Element i of a tensor made with `seed`: small exact values, distinct per tensor and index,
// representable in every dtype (f16/bf16 included) so that readers can check them.
inline double ExpectedValue(DType dtype, size_t i, int seed) {
  const double v = static_cast<double>((i * 7 + static_cast<size_t>(seed) * 13) % 61) - 30;
  if (dtype == DType::kUInt8) return static_cast<double>((i + static_cast<size_t>(seed)) % 251);
  if (collectives::IsFloatingPoint(dtype)) return v / 4;  // quarters: exact in f16 and bf16
  return v;
}

inline HostTensor MakeTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                             int seed) {
  HostTensor t = HostTensor::Allocate(name, dtype, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.mutable_data());
  for (size_t i = 0; i < t.numel(); ++i) {
    const double v = ExpectedValue(dtype, i, seed);
    switch (dtype) {
      case DType::kFloat32: {
        float f = static_cast<float>(v);
        std::memcpy(p + 4 * i, &f, 4);
        break;
      }
      case DType::kFloat64:
        std::memcpy(p + 8 * i, &v, 8);
        break;
      case DType::kFloat16: {
        uint16_t h = FloatToHalf(static_cast<float>(v));
        std::memcpy(p + 2 * i, &h, 2);
        break;
      }
      case DType::kBFloat16: {
        uint16_t h = FloatToBFloat16(static_cast<float>(v));
        std::memcpy(p + 2 * i, &h, 2);
        break;
      }
      case DType::kInt32: {
        int32_t x = static_cast<int32_t>(v);
        std::memcpy(p + 4 * i, &x, 4);
        break;
      }
      case DType::kInt64: {
        int64_t x = static_cast<int64_t>(v);
        std::memcpy(p + 8 * i, &x, 8);
        break;
      }
      case DType::kUInt8:
        p[i] = static_cast<uint8_t>(v);
        break;
    }
  }
  return t;
}

inline void ExpectSameTensor(const HostTensor& a, const HostTensor& b) {
  EXPECT_EQ(a.name(), b.name());
  EXPECT_EQ(a.dtype(), b.dtype()) << a.name();
  EXPECT_EQ(a.shape(), b.shape()) << a.name();
  ASSERT_EQ(a.nbytes(), b.nbytes()) << a.name();
  if (a.nbytes() > 0) {
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << a.name() << " differs";
  }
}

// Same step, epoch, attributes and tensors (matched by name; order may differ).
inline void ExpectSameShard(const Shard& want, const Shard& got) {
  EXPECT_EQ(want.step, got.step);
  EXPECT_EQ(want.epoch, got.epoch);
  EXPECT_EQ(want.attributes, got.attributes);
  ASSERT_EQ(want.tensors.size(), got.tensors.size());
  std::map<std::string, const HostTensor*> by_name;
  for (const HostTensor& t : got.tensors) by_name[t.name()] = &t;
  for (const HostTensor& t : want.tensors) {
    const auto it = by_name.find(t.name());
    ASSERT_NE(it, by_name.end()) << t.name() << " missing";
    ExpectSameTensor(t, *it->second);
  }
}

// A small training-like shard: model and optimizer tensors (only on rank 0, as with data
// parallelism), and per-rank RNG and sampler state.
inline Shard MakeShard(int64_t step, int rank, int seed_base = 0) {
  Shard s;
  s.step = step;
  s.epoch = step / 10;
  const int seed = static_cast<int>(step) * 31 + rank + seed_base;
  if (rank == 0) {
    s.tensors.push_back(MakeTensor("model/fc1.weight", DType::kFloat32, {7, 13}, seed));
    s.tensors.push_back(MakeTensor("model/fc1.bias", DType::kFloat32, {7}, seed + 1));
    s.tensors.push_back(MakeTensor("optimizer/0/exp_avg", DType::kFloat32, {7, 13}, seed + 2));
    s.tensors.push_back(MakeTensor("optimizer/0/step", DType::kInt64, {}, seed + 3));
  }
  s.attributes["rng"] = Blob{std::vector<uint8_t>(5056, static_cast<uint8_t>(seed))};
  s.attributes["sampler.position"] = int64_t{step * 64 + rank};
  s.attributes["note"] = std::string("rank ") + std::to_string(rank);
  return s;
}

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/cohort-ckpt-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs fn(rank) on world threads; returns each rank's exception (null when it returned).
inline std::vector<std::exception_ptr> RunRanks(int world, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace cohort::checkpoint::testing
