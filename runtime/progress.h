// ProgressLine: rank 0's view of training, one line:
//   epoch 1/2 step 120/469 3412 samples/s loss 0.512 ETA 0:42
// On a terminal the line is rewritten in place ('\r') a few times a second; into a pipe or a file
// (the launcher's "[rank N]" prefixing, CI logs) each report is a plain line of its own, because
// a '\r' there would glue every update into one endless line. No libtorch here.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace cohort::runtime {

struct ProgressSnapshot {
  int64_t epoch = 0;  // 0-based; shown 1-based
  int64_t epochs = 1;
  int64_t step = 0;  // steps done in this epoch
  int64_t steps_per_epoch = 0;
  double samples_per_second = 0;
  double loss = 0;
  bool has_loss = false;    // false until the first loss is known (shown as "loss -")
  double eta_seconds = -1;  // < 0: unknown (shown as "ETA -")
  std::string note;         // appended after "; " when not empty (e.g. the straggler)
};

enum class ProgressMode { kOff, kTty, kPlain };

// COHORT_PROGRESS (auto, tty, plain, off); auto: kTty when out is a terminal, else kPlain, and
// kPlain under mpirun, which hands its ranks a pseudo-terminal even when its own output goes to
// a file. Throws InvalidArgument for another value.
ProgressMode ProgressModeFromEnv(std::FILE* out);

class ProgressLine {
 public:
  // Writes to out. tty: rewrite in place, at most every refresh seconds between reports.
  ProgressLine(std::FILE* out, bool tty, double refresh = 0.2);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Whether out is a terminal.
  static bool IsTerminal(std::FILE* out);

  // A report (every progress interval): printed as a line of its own, or refreshed in place.
  void Report(const ProgressSnapshot& s);
  // Between reports: refreshes the line on a terminal if refresh seconds passed; else nothing.
  void Tick(const ProgressSnapshot& s);
  // Ends an in-place line with '\n' (end of an epoch, end of training); no-op otherwise.
  void EndLine();

  // The text of a snapshot, without '\r' or '\n'.
  static std::string Format(const ProgressSnapshot& s);
  // "0:42", "12:05", "1:02:03"; "-" for a negative or non-finite value.
  static std::string FormatDuration(double seconds);

 private:
  void Refresh(const ProgressSnapshot& s);

  std::FILE* out_;
  bool tty_;
  std::chrono::duration<double> refresh_;
  std::chrono::steady_clock::time_point last_refresh_{};
  size_t last_width_ = 0;  // characters on the in-place line, to blank out a shorter rewrite
  bool open_line_ = false;
};

}  // namespace cohort::runtime
