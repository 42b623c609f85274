#include "runtime/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>

#include "common/env.h"
#include "common/error.h"

namespace cohort::runtime {

ProgressMode ProgressModeFromEnv(std::FILE* out) {
  const std::string v = env::kProgress.Str("auto");
  if (v == "off") return ProgressMode::kOff;
  if (v == "tty") return ProgressMode::kTty;
  if (v == "plain") return ProgressMode::kPlain;
  if (v != "auto") {
    throw InvalidArgument(fmt::format("{}={} is not a progress mode; use auto, tty, plain or off",
                                      env::kProgress.name(), v));
  }
  if (env::kOmpiRank.IsSet()) return ProgressMode::kPlain;
  return ProgressLine::IsTerminal(out) ? ProgressMode::kTty : ProgressMode::kPlain;
}

ProgressLine::ProgressLine(std::FILE* out, bool tty, double refresh)
    : out_(out), tty_(tty), refresh_(refresh) {}

ProgressLine::~ProgressLine() { EndLine(); }

bool ProgressLine::IsTerminal(std::FILE* out) { return out && ::isatty(::fileno(out)) == 1; }

std::string ProgressLine::FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  if (h > 0) return fmt::format("{}:{:02d}:{:02d}", h, m, s);
  return fmt::format("{}:{:02d}", m, s);
}

std::string ProgressLine::Format(const ProgressSnapshot& s) {
  // Three significant digits are what a human reads off a loss; tiny losses switch to
  // scientific notation rather than printing 0.000.
  std::string loss = "-";
  if (s.has_loss) {
    loss = (s.loss != 0 && std::fabs(s.loss) < 0.001) ? fmt::format("{:.2e}", s.loss)
                                                      : fmt::format("{:.3f}", s.loss);
  }
  return fmt::format("epoch {}/{} step {}/{} {:.0f} samples/s loss {} ETA {}{}{}", s.epoch + 1,
                     s.epochs, s.step, s.steps_per_epoch, s.samples_per_second, loss,
                     FormatDuration(s.eta_seconds), s.note.empty() ? "" : "; ", s.note);
}

void ProgressLine::Refresh(const ProgressSnapshot& s) {
  const std::string text = Format(s);
  // Pad with blanks so a shorter line fully covers the previous one.
  const size_t pad = last_width_ > text.size() ? last_width_ - text.size() : 0;
  std::fprintf(out_, "\r%s%*s", text.c_str(), static_cast<int>(pad), "");
  std::fflush(out_);
  last_width_ = text.size();
  open_line_ = true;
  last_refresh_ = std::chrono::steady_clock::now();
}

void ProgressLine::Report(const ProgressSnapshot& s) {
  if (tty_) {
    Refresh(s);
    return;
  }
  std::fprintf(out_, "%s\n", Format(s).c_str());
  std::fflush(out_);
}

void ProgressLine::Tick(const ProgressSnapshot& s) {
  if (!tty_) return;
  if (std::chrono::steady_clock::now() - last_refresh_ < refresh_) return;
  Refresh(s);
}

void ProgressLine::EndLine() {
  if (!open_line_) return;
  std::fputc('\n', out_);
  std::fflush(out_);
  open_line_ = false;
  last_width_ = 0;
}

}  // namespace cohort::runtime
