// Process-wide counters of finished collective and point-to-point operations, per backend and
// op type, and the time of the last heartbeat this process wrote: what a metrics endpoint
// (runtime/prometheus_sink.h) reads at scrape time. The Communicator base class records every op
// that finishes without an error (OpFinished); the cost on that path is a short name lookup
// and three relaxed atomic adds, no lock. No libtorch.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "collectives/op.h"

namespace cohort::collectives {

// The totals of one (backend, op type) since the process started.
struct OpTotals {
  std::string backend;  // Communicator::Backend(): "gloo", "mpi", "nccl", ...
  OpType type = OpType::kAllReduce;
  uint64_t ops = 0;
  // Bytes of this rank's buffer per op: the input for collectives and sends, the receive
  // buffer for receives (an all-gather counts its contribution, not the gathered result).
  uint64_t bytes = 0;
  double seconds = 0;  // sum of the ops' run times (Work::Duration)
};

class OpCounters {
 public:
  // Adds one finished op. Thread-safe and lock-free once the backend was seen; backends past
  // the first 8 distinct names are not counted (logged once).
  static void Record(const char* backend, OpType type, uint64_t bytes,
                     std::chrono::nanoseconds duration);
  // Every (backend, op type) with at least one op, in first-seen backend order.
  static std::vector<OpTotals> Snapshot();

  // Notes that this process wrote its heartbeat now (collectives/heartbeat.h).
  static void RecordHeartbeat();
  // Seconds since the last RecordHeartbeat(), or a negative value when there was none.
  static double SecondsSinceHeartbeat();
};

}  // namespace cohort::collectives
