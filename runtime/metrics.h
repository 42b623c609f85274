// MetricsWriter: training metrics as JSON lines, one object per report, flushed as written so
// that `tail -f` and a crash both see every finished line:
//   {"step":120,"epoch":0,"loss":0.512,"samples_per_second":3412.0,"time":4.21,"timestamp":...}
// step: optimizer steps taken in total; epoch: 0-based (TrainerState's); loss: mean over ranks
// and over the steps since the previous line; time: seconds since Fit began; timestamp: Unix
// seconds. No libtorch here.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace cohort::runtime {

struct MetricsRecord {
  int64_t step = 0;
  int64_t epoch = 0;
  double loss = 0;
  double samples_per_second = 0;
  double time = 0;
};

class MetricsWriter {
 public:
  // Opens path (truncating it, or appending to it for a resumed run). Throws InvalidArgument
  // naming the path and the reason when it cannot be opened for writing.
  MetricsWriter(const std::string& path, bool append);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Appends one line. A failed write (disk full) is logged once and training goes on: metrics
  // are not worth a lost run.
  void Write(const MetricsRecord& record);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  bool warned_ = false;
};

}  // namespace cohort::runtime
