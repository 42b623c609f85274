#include "collectives/rendezvous.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <vector>

#include "common/error.h"

namespace cohort::collectives {
namespace {

// The Timeout of a join that not every rank reached: names the ranks whose keys are missing.
cohort::Timeout NeverJoined(Store& store, const std::string& prefix, int size,
                            std::chrono::milliseconds timeout, const std::string& what) {
  const auto present = store.List(prefix);
  std::vector<int> missing;
  for (int r = 0; r < size; ++r) {
    if (!present.count(prefix + std::to_string(r))) missing.push_back(r);
  }
  return cohort::Timeout(fmt::format(
      "{}: rank{} {} of {} never joined within {:.1f} s; check that every worker started and "
      "that all use the same store address and run id",
      what, missing.size() == 1 ? "" : "s", fmt::join(missing, ","), size,
      timeout.count() / 1000.0));
}

}  // namespace

void JoinGroup(Store& store, const std::string& scope, int rank, int size,
               std::chrono::milliseconds timeout, const std::string& what) {
  // Per caller: a backend that joined and then failed to start leaves its keys, and the next
  // backend's join (auto's fallback) must not read them as an earlier job's.
  const std::string prefix = scope + "/" + what + "/join/";
  const std::string nonce =
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  // O(1) store work per rank (Store::Join counts arrivals; the last announces that all are in),
  // in one round trip where the store can. (Waiting on all N keys made each rank's request grow
  // with N: O(N^2) for the store.)
  bool joined;
  try {
    joined = store.Join(prefix, rank, size, nonce, timeout);
  } catch (const cohort::Timeout&) {
    throw NeverJoined(store, prefix, size, timeout, what);
  }
  // A key that is already there belongs to an earlier group under the same name: its addresses
  // and ids are stale, and using them fails in obscure ways. Refuse, saying how to fix it.
  if (!joined) {
    throw InvalidArgument(fmt::format(
        "{}: rank {} already joined '{}' on this store: an earlier job or communicator used the "
        "same run id and name; give each job its own COHORT_RUN_ID (and each communicator its "
        "own name), or restart the store",
        what, rank, scope));
  }
}

}  // namespace cohort::collectives
