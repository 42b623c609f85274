#include "collectives/heartbeat.h"

#include <fmt/format.h>

#include "collectives/op_counters.h"
#include "common/env.h"
#include "common/log.h"
#include "common/world.h"

namespace cohort::collectives {

Heartbeat::Heartbeat(std::shared_ptr<Store> store, std::string run_id, int restart, int rank,
                     std::chrono::milliseconds interval)
    : store_(std::move(store)), key_(Key(run_id, restart, rank)), interval_(interval) {}

std::unique_ptr<Heartbeat> Heartbeat::FromEnv(std::shared_ptr<Store> store) {
  return std::make_unique<Heartbeat>(std::move(store), env::kRunId.Str("default"),
                                     static_cast<int>(env::kRestart.Int(0)), DetectWorld().rank);
}

std::string Heartbeat::Prefix(const std::string& run_id, int restart) {
  return fmt::format("cohort/{}/{}/heartbeat/", run_id, restart);
}

std::string Heartbeat::Key(const std::string& run_id, int restart, int rank) {
  return Prefix(run_id, restart) + std::to_string(rank);
}

void Heartbeat::Beat() {
  ++count_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_write_ < interval_) return;
  last_write_ = now;
  try {
    store_->Set(key_, std::to_string(count_));
    OpCounters::RecordHeartbeat();  // for metrics endpoints: seconds since the last beat
  } catch (const std::exception& e) {
    COHORT_WARN(kRuntime, "heartbeat not delivered ({}); the launcher may think this rank hung",
                e.what());
  }
}

}  // namespace cohort::collectives
