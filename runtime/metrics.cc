#include "runtime/metrics.h"

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"

namespace cohort::runtime {

MetricsWriter::MetricsWriter(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_) {
    throw InvalidArgument(
        fmt::format("cannot write metrics to {}: {}; pass a path in a writable, existing directory",
                    path, std::strerror(errno)));
  }
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::Write(const MetricsRecord& r) {
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  nlohmann::ordered_json line = {
      // fields in the documented order
      {"step", r.step},
      {"epoch", r.epoch},
      // JSON has no NaN: a diverged loss is written as null rather than as an unparsable line.
      {"loss",
       std::isfinite(r.loss) ? nlohmann::ordered_json(r.loss) : nlohmann::ordered_json(nullptr)},
      {"samples_per_second", r.samples_per_second},
      {"time", r.time},
      {"step_seconds", r.step_seconds},
  };
  if (r.straggler_rank >= 0) {
    line["straggler_rank"] = r.straggler_rank;
    line["straggler_node"] = r.straggler_node;
    line["straggler_ratio"] = r.straggler_ratio;
  }
  if (r.ps_staleness >= 0) line["ps_staleness"] = r.ps_staleness;
  line["timestamp"] = now;
  const std::string text = line.dump() + "\n";
  const bool ok =
      std::fwrite(text.data(), 1, text.size(), file_) == text.size() && std::fflush(file_) == 0;
  if (!ok && !warned_) {
    warned_ = true;
    COHORT_WARN(kRuntime, "cannot write metrics to {}: {}; training goes on without them", path_,
                std::strerror(errno));
  }
}

}  // namespace cohort::runtime
