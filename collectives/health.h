// HealthMonitor: each rank publishes, to the store, the sequence number of the last collective it
// started and completed plus a heartbeat counter. When an operation fails or times out, Diagnose()
// reads every rank's report and names the ranks that never reached the operation and those that
// stopped responding (Horovod's stall inspector, but on the failing path, not a timer).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "collectives/store/store.h"

namespace cohort::collectives {

class HealthMonitor {
 public:
  // How verdicts name rank r ("rank 1 of group tp-0 (global rank 3)"); default "rank r".
  using RankNamer = std::function<std::string(int)>;
  // Publishes under "<scope>/health/<rank>". interval: time between heartbeats.
  HealthMonitor(std::shared_ptr<Store> store, std::string scope, int rank, int size,
                std::chrono::milliseconds interval, RankNamer namer = nullptr);
  ~HealthMonitor();
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // This rank began collective seq (name: "allreduce"). Cheap: publishing happens off-thread.
  void Started(uint64_t seq, const char* name);
  // This rank finished collective seq.
  void Completed(uint64_t seq);

  // One clause naming the ranks to blame for collective seq (named name) not completing, e.g.
  // "rank 2 never reached it (its last collective was #16 broadcast); rank 3 stopped responding
  // (no heartbeat for 1.2 s, during #17 allreduce)". Takes up to ~2 heartbeat intervals.
  std::string Diagnose(uint64_t seq, const std::string& name);

  // Which ranks are blamed, for tests and for callers that want them as numbers.
  struct Verdict {
    std::vector<int> behind;   // never started seq
    std::vector<int> silent;   // heartbeat stopped
    std::vector<int> missing;  // never reported at all
    std::string text;
  };
  Verdict Inspect(uint64_t seq, const std::string& name);

 private:
  struct Report {
    bool present = false;
    uint64_t started = 0;
    uint64_t completed = 0;
    uint64_t beat = 0;
    std::string name;
  };
  std::vector<Report> ReadAll();
  void Loop();
  void Publish();

  std::shared_ptr<Store> store_;
  const std::string prefix_;
  const int rank_;
  const int size_;
  const std::chrono::milliseconds interval_;
  const RankNamer namer_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool dirty_ = true;
  uint64_t started_ = 0;
  std::chrono::steady_clock::time_point started_at_{};
  uint64_t completed_ = 0;
  uint64_t beat_ = 0;
  const char* name_ = "";
  bool warned_ = false;
  std::thread thread_;
};

}  // namespace cohort::collectives
