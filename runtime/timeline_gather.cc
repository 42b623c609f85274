#include "runtime/timeline_gather.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/net.h"
#include "common/timeline.h"
#include "runtime/process_group.h"

namespace cohort::runtime {
namespace {

using collectives::DType;
using collectives::TensorView;

// This rank's clock minus rank 0's, 0 on rank 0's host (one monotonic clock per host).
int64_t ClockOffset(ProcessGroup& pg) {
  pg.comm().Barrier()->Wait();
  double mine[2] = {static_cast<double>(timeline::NowUs()),
                    static_cast<double>(std::hash<std::string>{}(net::Hostname()) % (1ull << 50))};
  double zero[2] = {mine[0], mine[1]};
  pg.comm().Broadcast(TensorView(zero, 2, DType::kFloat64), 0)->Wait();
  return mine[1] == zero[1] ? 0 : static_cast<int64_t>(mine[0] - zero[0]);
}

// Every rank's text, on rank 0 (elsewhere: empty).
std::vector<std::string> GatherText(ProcessGroup& pg, const std::string& mine) {
  const auto n = static_cast<size_t>(pg.Size());
  std::vector<int64_t> sizes(n);
  int64_t size = static_cast<int64_t>(mine.size());
  pg.comm()
      .AllGather(TensorView(&size, 1, DType::kInt64), TensorView(sizes.data(), n, DType::kInt64))
      ->Wait();
  const auto widest = static_cast<size_t>(*std::max_element(sizes.begin(), sizes.end()));
  std::string padded = mine;
  padded.resize(widest);
  std::string all(widest * n, '\0');
  if (widest > 0) {
    pg.comm()
        .AllGather(TensorView(padded.data(), widest, DType::kUInt8),
                   TensorView(all.data(), all.size(), DType::kUInt8))
        ->Wait();
  }
  std::vector<std::string> out;
  if (pg.Rank() != 0) return out;
  for (size_t r = 0; r < n; ++r) out.push_back(all.substr(r * widest, sizes[r]));
  return out;
}

}  // namespace

int WriteTimeline(ProcessGroup& pg) {
  timeline::Init();
  if (!timeline::Enabled()) return 0;
  const int64_t offset = pg.Size() > 1 ? ClockOffset(pg) : 0;
  const std::string mine = timeline::EventsJson(pg.GlobalRank(pg.Rank()), offset);
  const std::vector<std::string> ranks =
      pg.Size() > 1 ? GatherText(pg, mine) : std::vector<std::string>{mine};
  if (pg.Rank() != 0) return 0;
  std::string body;
  int events = 0;
  for (const std::string& r : ranks) {
    if (r.empty()) continue;
    body += (body.empty() ? "" : ",\n") + r;
    events += static_cast<int>(std::count(r.begin(), r.end(), '\n')) + 1;
  }
  const std::string& path = timeline::Path();
  std::FILE* f = std::fopen(path.c_str(), "w");
  const std::string text = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + body + "\n]}\n";
  const bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (f) std::fclose(f);
  if (!ok) {
    COHORT_WARN(kRuntime, "cannot write the timeline to {}; pass a writable COHORT_TIMELINE", path);
    return 0;
  }
  COHORT_INFO(kRuntime, "timeline: {} events of {} rank(s) in {}", events, ranks.size(), path);
  return events;
}

}  // namespace cohort::runtime
