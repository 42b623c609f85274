#include "common/timeline.h"

#include <fmt/format.h>
#include <time.h>

#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/env.h"

namespace cohort::timeline {
namespace detail {
std::atomic<bool> g_enabled{false};
}  // namespace detail

namespace {

struct Event {
  const char* name;
  const char* category;
  int64_t start_us;
  int64_t end_us;
  int track;  // index into State::tracks
  std::string args;
};

struct State {
  std::mutex mu;
  std::vector<Event> events;
  std::vector<std::string> tracks;            // by tid
  std::map<std::thread::id, int> thread_tid;  // a thread's own track
  std::map<std::string, int> named_tid;       // named tracks
  std::string path;
};

State& S() {
  static State* state = new State();  // never destroyed: spans may end during exit
  return *state;
}

std::once_flag g_init;

// The track id of the calling thread (named "thread N" in order of first use; the first one,
// normally the training thread, is "main") or of a named track.
int TrackLocked(State& s, const char* track) {
  if (track) {
    auto [it, added] = s.named_tid.emplace(track, static_cast<int>(s.tracks.size()));
    if (added) s.tracks.push_back(track);
    return it->second;
  }
  auto [it, added] =
      s.thread_tid.emplace(std::this_thread::get_id(), static_cast<int>(s.tracks.size()));
  if (added) {
    s.tracks.push_back(s.thread_tid.size() == 1 ? "main"
                                                : fmt::format("thread {}", s.thread_tid.size()));
  }
  return it->second;
}

std::string Escape(const char* text) {
  std::string out;
  for (const char* c = text; *c; ++c) {
    if (*c == '"' || *c == '\\') out += '\\';
    out += *c;
  }
  return out;
}

}  // namespace

void Init() {
  std::call_once(g_init, [] {
    const std::string path = env::kTimeline.Str("");
    if (!path.empty()) {
      S().path = path;
      detail::g_enabled.store(true);
    }
  });
}

const std::string& Path() {
  Init();
  return S().path;
}

int64_t NowUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

void detail::Append(const char* name, const char* category, int64_t start_us, int64_t end_us,
                    const char* track, const std::string& args_json) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.events.push_back({name, category, start_us, end_us, TrackLocked(s, track), args_json});
}

std::string EventsJson(int pid, int64_t offset_us) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::string out;
  auto add = [&out](const std::string& e) { out += (out.empty() ? "" : ",\n") + e; };
  if (s.events.empty()) return out;
  add(fmt::format(R"({{"ph":"M","name":"process_name","pid":{},"args":{{"name":"rank {}"}}}})", pid,
                  pid));
  for (size_t t = 0; t < s.tracks.size(); ++t) {
    add(fmt::format(R"({{"ph":"M","name":"thread_name","pid":{},"tid":{},"args":{{"name":"{}"}}}})",
                    pid, t, Escape(s.tracks[t].c_str())));
  }
  for (const Event& e : s.events) {
    add(fmt::format(R"({{"ph":"X","name":"{}","cat":"{}","pid":{},"tid":{},"ts":{},"dur":{}{}}})",
                    Escape(e.name), Escape(e.category), pid, e.track, e.start_us - offset_us,
                    e.end_us - e.start_us, e.args.empty() ? "" : ",\"args\":{" + e.args + "}"));
  }
  return out;
}

void Clear() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.events.clear();
}

}  // namespace cohort::timeline
