// Process-wide totals of this rank's checkpoint saves, for metrics endpoints
// (runtime/prometheus_sink.h): AsyncSaver records every save it finishes, successful or not.
// Saves are seconds apart, so a mutex is fine here. No libtorch.
#pragma once

#include <cstdint>

#include "checkpoint/checkpointer.h"

namespace cohort::checkpoint {

struct SaveTotals {
  uint64_t saves = 0;     // completed snapshots this rank took part in
  uint64_t failures = 0;  // saves that threw
  uint64_t bytes = 0;     // sum of this rank's shard sizes
  double seconds = 0;     // sum of SavedSnapshot::total_seconds (until the snapshot was complete)
  double encode_seconds = 0;
  double write_seconds = 0;
  double last_seconds = 0;  // total_seconds of the newest save
  int64_t last_step = -1;   // its step; -1 before the first
};

class SaveStats {
 public:
  static void RecordSave(const SavedSnapshot& saved);
  static void RecordFailure();
  static SaveTotals Totals();
};

}  // namespace cohort::checkpoint
