#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <atomic>
#include <mutex>
#include <sstream>

#include "common/env.h"
#include "common/error.h"

namespace cohort::log {
namespace {

constexpr int kNumSubsys = static_cast<int>(Subsys::kOperator) + 1;

struct State {
  std::mutex mu;
  std::shared_ptr<spdlog::logger> logger;
  std::atomic<int> level{spdlog::level::info};
  std::atomic<uint32_t> subsys_mask{~0u};
  std::string rank = "-";
};

State& GetState() {
  static State* s = new State();  // never destroyed: logging may happen during static teardown
  return *s;
}

void ApplyPattern(State& s) {
  // The rank is a literal in the pattern; '%' would start a flag, so none may appear in it.
  s.logger->set_pattern("[%H:%M:%S.%e] [cohort rank " + s.rank + "] [%^%l%$] %v");
}

spdlog::level::level_enum ParseLevel(const std::string& v) {
  auto lvl = spdlog::level::from_str(v);
  if (lvl == spdlog::level::off && v != "off") {
    throw InvalidArgument("COHORT_LOG_LEVEL='" + v +
                          "' is not a level; use trace, debug, info, warn, error or off");
  }
  return lvl;
}

uint32_t ParseSubsys(const std::string& v) {
  if (v.empty() || v == "all") return ~0u;
  bool exclude = v[0] == '^';
  uint32_t mask = 0;
  std::stringstream ss(exclude ? v.substr(1) : v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "all") {
      mask = ~0u;
      continue;
    }
    bool found = false;
    for (int i = 0; i < kNumSubsys; ++i) {
      if (item == SubsysName(static_cast<Subsys>(i))) {
        mask |= 1u << i;
        found = true;
      }
    }
    if (!found) {
      throw InvalidArgument("COHORT_LOG_SUBSYS names unknown subsystem '" + item +
                            "'; known: core,store,coll,gloo,mpi,nccl,launch,runtime,ckpt,bench");
    }
  }
  return exclude ? ~mask : mask;
}

void LoadLocked(State& s) {
  if (!s.logger) {
    s.logger = spdlog::stderr_color_mt("cohort");
    s.logger->set_level(spdlog::level::trace);  // filtering happens in Enabled()
    s.logger->flush_on(spdlog::level::trace);   // lines must survive a crash or SIGKILL
    ApplyPattern(s);
  }
  s.level = ParseLevel(env::kLogLevel.Str("info"));
  s.subsys_mask = ParseSubsys(env::kLogSubsys.Str("all"));
}

std::once_flag g_init;

State& Initialized() {
  State& s = GetState();
  std::call_once(g_init, [&] {
    std::lock_guard<std::mutex> lock(s.mu);
    try {
      LoadLocked(s);
    } catch (const Error& e) {
      // A bad COHORT_LOG_* must not make every log call throw; say so once and go on.
      s.level = spdlog::level::info;
      s.subsys_mask = ~0u;
      s.logger->warn("[core] {}", e.what());
    }
  });
  return s;
}

}  // namespace

const char* SubsysName(Subsys s) {
  switch (s) {
    case Subsys::kCore:
      return "core";
    case Subsys::kStore:
      return "store";
    case Subsys::kColl:
      return "coll";
    case Subsys::kGloo:
      return "gloo";
    case Subsys::kMpi:
      return "mpi";
    case Subsys::kNccl:
      return "nccl";
    case Subsys::kLaunch:
      return "launch";
    case Subsys::kRuntime:
      return "runtime";
    case Subsys::kCheckpoint:
      return "ckpt";
    case Subsys::kBench:
      return "bench";
    case Subsys::kOperator:
      return "operator";
  }
  return "?";
}

void SetRank(int rank) {
  State& s = Initialized();
  std::lock_guard<std::mutex> lock(s.mu);
  s.rank = std::to_string(rank);
  ApplyPattern(s);
}

spdlog::logger& Logger() { return *Initialized().logger; }

bool Enabled(Subsys sub, spdlog::level::level_enum level) {
  State& s = Initialized();
  return level >= s.level.load(std::memory_order_relaxed) &&
         (s.subsys_mask.load(std::memory_order_relaxed) >> static_cast<int>(sub) & 1u);
}

void Reload() {
  State& s = Initialized();
  std::lock_guard<std::mutex> lock(s.mu);
  LoadLocked(s);
}

}  // namespace cohort::log
