// A timeline of where each rank's time goes, as a Chrome trace (the JSON trace-event format that
// chrome://tracing and Perfetto load): COHORT_TIMELINE=FILE turns it on. Code marks what it does
// with a Span (a complete "X" event on the calling thread) or, for work that runs asynchronously
// (a DDP bucket's all-reduce), Complete() with its own start and end on a named track. Events
// are kept in memory; the Trainer gathers every rank's at the end of Fit and rank 0 writes FILE
// (runtime/timeline_gather.h), with pid = rank and clocks aligned across hosts.
//
// Cost: off (the default) every Span is one relaxed atomic load and a branch; on, an event is a
// clock read and a short locked append (about a microsecond), a handful per training step.
// Torch-free.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace cohort::timeline {

namespace detail {
extern std::atomic<bool> g_enabled;
void Append(const char* name, const char* category, int64_t start_us, int64_t end_us,
            const char* track, const std::string& args_json);
}  // namespace detail

// Whether COHORT_TIMELINE is set (read once, at the first call of Init() or Enabled()).
void Init();
inline bool Enabled() { return detail::g_enabled.load(std::memory_order_relaxed); }
// The file COHORT_TIMELINE names ("" when off).
const std::string& Path();

// Microseconds on the monotonic clock (CLOCK_MONOTONIC: one clock for every process of a host).
int64_t NowUs();

// Records an event [start_us, end_us) on `track` (nullptr: the calling thread's own track).
// args_json: a JSON object's members ("\"bytes\": 4096") or "".
inline void Complete(const char* name, const char* category, int64_t start_us, int64_t end_us,
                     const char* track = nullptr, const std::string& args_json = "") {
  if (Enabled()) detail::Append(name, category, start_us, end_us, track, args_json);
}

// A span from construction to destruction, on the calling thread's track or on `track`.
// name, category and track must outlive it (string literals).
class Span {
 public:
  Span(const char* name, const char* category, const char* track = nullptr)
      : name_(name), category_(category), track_(track), start_(Enabled() ? NowUs() : -1) {}
  ~Span() {
    if (start_ >= 0) Complete(name_, category_, start_, NowUs(), track_);
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  const char* name_;
  const char* category_;
  const char* track_;
  int64_t start_;
};

// This process's events as a JSON array's members (no brackets), every timestamp shifted by
// -offset_us, with pid = pid and one thread_name metadata event per track. "" when none.
std::string EventsJson(int pid, int64_t offset_us);
// Drops every recorded event (tests).
void Clear();

}  // namespace cohort::timeline
