#include "launcher/termination_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace cohort::launcher {

namespace {
constexpr const char* kKubernetesDefault = "/dev/termination-log";
}  // namespace

std::string TerminationLogPath(const env::Map* from) {
  if (auto path = env::kTerminationLog.Get(from)) return *path;
  if (::access(kKubernetesDefault, W_OK) == 0) return kKubernetesDefault;
  return "";
}

bool WriteTerminationMessage(const std::string& line) {
  const std::string path = TerminationLogPath();
  if (path.empty()) return false;
  std::string text = line.substr(0, kTerminationMessageLimit - 1) + "\n";
  // O_TRUNC: a restarted container's launcher replaces the last verdict instead of adding one.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return done == text.size();
}

}  // namespace cohort::launcher
