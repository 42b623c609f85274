// Parameter servers for tests: real `cohort ps-server` processes on 127.0.0.1, each on a port
// it picks itself (read from its "listening on" line), killed when the object goes.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/util/subprocess.h"

namespace cohort::testing {

class PsServerProcs {
 public:
  // Starts shards 0..n-1 of `shards` (default n) with this token (none when empty) and waits
  // until each listens.
  PsServerProcs(int n, const std::string& token, int shards = 0) {
    if (shards == 0) shards = n;
    for (int i = 0; i < n; ++i) {
      procs_.push_back(std::make_unique<Subprocess>(
          std::vector<std::string>{BinPath("cohort"), "ps-server", "--host", "127.0.0.1", "--port",
                                   "0", "--shard", std::to_string(i), "--shards",
                                   std::to_string(shards)},
          std::map<std::string, std::string>{{"COHORT_TOKEN", token},
                                             {"COHORT_LOG_LEVEL", "warn"}}));
    }
    for (int i = 0; i < n; ++i) {
      auto line = procs_[i]->AwaitLine("listening on", std::chrono::seconds(20));
      if (!line) {
        ADD_FAILURE() << "ps-server " << i << " did not start: " << procs_[i]->Output();
        addresses_.push_back("127.0.0.1:1");
        continue;
      }
      const auto at = line->find("listening on ") + 13;
      addresses_.push_back(line->substr(at, line->find(' ', at) - at));
    }
  }

  // "127.0.0.1:p0,127.0.0.1:p1,...": COHORT_PS_SERVERS.
  std::string List() const {
    std::string s;
    for (const auto& a : addresses_) s += (s.empty() ? "" : ",") + a;
    return s;
  }
  const std::string& Address(int i) const { return addresses_[static_cast<size_t>(i)]; }
  void Kill(int i, int sig) { procs_[static_cast<size_t>(i)]->Kill(sig); }
  // Waits for server i to end by itself (killed past timeout).
  ProcessResult Wait(int i, std::chrono::milliseconds timeout) {
    return procs_[static_cast<size_t>(i)]->Wait(timeout);
  }

 private:
  std::vector<std::unique_ptr<Subprocess>> procs_;
  std::vector<std::string> addresses_;
};

}  // namespace cohort::testing
