// The behaviour every ObjectStore must show, as value-parameterised tests: each backend's test
// binary instantiates StoreConformance with a factory that opens a fresh, empty store.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "checkpoint/store/object_store.h"

namespace cohort::checkpoint::testing {

struct StoreBackend {
  std::string name;
  // Opens a fresh empty store (a new memory:// name, temp dir or S3 prefix per call); may
  // return nullptr after GTEST_SKIP() when the backend cannot run here.
  std::function<std::unique_ptr<ObjectStore>()> open;
  // The largest object the roundtrip test writes (keeps slow backends within budget).
  size_t max_object = 41u << 20;
  // Keys the many-keys test writes (> 1000 to make S3 paginate).
  int many_keys = 1100;
};

inline std::ostream& operator<<(std::ostream& os, const StoreBackend& b) { return os << b.name; }

class StoreConformance : public ::testing::TestWithParam<StoreBackend> {
 protected:
  void SetUp() override {
    store_ = GetParam().open();
    if (store_ == nullptr) GTEST_SKIP() << GetParam().name << " is not available here";
  }
  std::unique_ptr<ObjectStore> store_;
};

}  // namespace cohort::checkpoint::testing
