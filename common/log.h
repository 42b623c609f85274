// Logging through spdlog: every line carries the rank and the subsystem. The level comes from
// COHORT_LOG_LEVEL (default info) and the subsystems from COHORT_LOG_SUBSYS (default all), as
// NCCL_DEBUG / NCCL_DEBUG_SUBSYS do.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace cohort::log {

enum class Subsys {
  kCore,
  kStore,
  kColl,
  kGloo,
  kMpi,
  kNccl,
  kLaunch,
  kRuntime,
  kCheckpoint,
  kBench,
  kOperator
};

const char* SubsysName(Subsys s);

// Sets the rank shown in every line ("-" until set). Call once the rank is known.
void SetRank(int rank);

// The shared logger (stderr). Re-reads COHORT_LOG_LEVEL / COHORT_LOG_SUBSYS on first use.
spdlog::logger& Logger();

// True when lines of this subsystem at this level are printed.
bool Enabled(Subsys s, spdlog::level::level_enum level);

// Re-reads the environment; for tests that change COHORT_LOG_*.
void Reload();

}  // namespace cohort::log

#define COHORT_LOG(subsys, lvl, ...)                                                        \
  do {                                                                                      \
    if (::cohort::log::Enabled(::cohort::log::Subsys::subsys, ::spdlog::level::lvl)) {      \
      ::cohort::log::Logger().log(::spdlog::level::lvl, "[{}] {}",                          \
                                  ::cohort::log::SubsysName(::cohort::log::Subsys::subsys), \
                                  ::fmt::format(__VA_ARGS__));                              \
    }                                                                                       \
  } while (0)

#define COHORT_TRACE(subsys, ...) COHORT_LOG(subsys, trace, __VA_ARGS__)
#define COHORT_DEBUG(subsys, ...) COHORT_LOG(subsys, debug, __VA_ARGS__)
#define COHORT_INFO(subsys, ...) COHORT_LOG(subsys, info, __VA_ARGS__)
#define COHORT_WARN(subsys, ...) COHORT_LOG(subsys, warn, __VA_ARGS__)
#define COHORT_ERROR(subsys, ...) COHORT_LOG(subsys, err, __VA_ARGS__)
