// Heartbeat: how a worker tells its launcher that it is alive and making progress. Call Beat()
// from the training loop (every step is fine: it writes to the store at most once per interval).
// A launcher treats a worker that has beaten at least once and then stays silent for
// --heartbeat-timeout as hung, and restarts the group. Workers that never beat are not watched.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "collectives/store/store.h"

namespace cohort::collectives {

class Heartbeat {
 public:
  // Keys follow the launcher's round: run_id and restart from COHORT_RUN_ID / COHORT_RESTART.
  Heartbeat(std::shared_ptr<Store> store, std::string run_id, int restart, int rank,
            std::chrono::milliseconds interval = std::chrono::seconds(1));
  // Reads the run id, restart and rank from the env contract.
  static std::unique_ptr<Heartbeat> FromEnv(std::shared_ptr<Store> store);

  // Records progress; writes to the store if the last write is older than the interval. Never
  // throws: a store that is briefly unreachable must not kill training.
  void Beat();

  // The store key a rank's heartbeat lives under.
  static std::string Key(const std::string& run_id, int restart, int rank);
  // The prefix of every rank's heartbeat in a round.
  static std::string Prefix(const std::string& run_id, int restart);

 private:
  std::shared_ptr<Store> store_;
  std::string key_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point last_write_{};
  uint64_t count_ = 0;
};

}  // namespace cohort::collectives
