#include "collectives/sigpipe.h"

#include <signal.h>

#include <mutex>

namespace cohort::collectives {

void IgnoreSigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old = {};
    if (::sigaction(SIGPIPE, nullptr, &old) != 0) return;
    const bool is_default = !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL;
    if (!is_default) return;  // the program chose a handler (or SIG_IGN) itself: keep it
    struct sigaction ignore = {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, nullptr);
  });
}

}  // namespace cohort::collectives
