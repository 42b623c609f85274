#include "collectives/auto_fallback.h"

#include <fmt/format.h>

#include "collectives/abortable_store.h"
#include "collectives/rendezvous.h"
#include "collectives/scope.h"
#include "common/log.h"

namespace cohort::collectives {
namespace {

// Tries chosen with a store that gives up when another rank failed. Empty on success, else why.
std::string TryStart(const CommFactory& chosen, const CommConfig& config,
                     std::unique_ptr<Communicator>* comm) {
  try {
    *comm = chosen(config);
    return "";
  } catch (const StartAborted&) {
    return "";  // another rank failed first: its reason is the one that counts
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace

std::unique_ptr<Communicator> StartAgreeingOrFallBack(const std::string& name,
                                                      const CommFactory& chosen,
                                                      const std::string& why_not,
                                                      const CommFactory& fallback,
                                                      const CommConfig& config) {
  if (config.size > 1 && !config.store) {
    // No store to agree through: one rank alone on ps would strand its peers, so the original
    // outcome stands.
    if (!why_not.empty()) throw Unavailable(fmt::format("no backend can run: {}", why_not));
    return chosen(config);
  }
  std::string cause;
  if (config.size <= 1) {
    // Alone: nobody to agree with.
    std::unique_ptr<Communicator> comm;
    std::string why = why_not.empty() ? TryStart(chosen, config, &comm) : why_not;
    if (comm) return comm;
    cause = fmt::format("rank {}: {}", config.rank, why);
  } else {
    const std::string prefix = ScopeOf(config) + "/auto";
    const std::string failed_key = prefix + "/failed";
    auto guarded = std::make_shared<AbortableStore>(config.store, failed_key);
    CommConfig c = config;
    c.store = guarded;
    std::unique_ptr<Communicator> comm;
    const std::string why = why_not.empty() ? TryStart(chosen, c, &comm) : why_not;
    if (comm) {
      try {
        // Every rank that started arrives here; a rank that failed sets failed_key instead, and
        // StartAborted ends this wait. "ok" after everyone arrived means nobody failed.
        JoinGroup(*guarded, prefix, config.rank, config.size, config.connect_timeout, "ok");
        guarded->Disarm();
        return comm;
      } catch (const StartAborted&) {
        comm.reset();
      }
    } else if (!why.empty()) {
      config.store->CompareSet(failed_key, "", fmt::format("rank {}: {}", config.rank, why));
    }
    cause = config.store->Get(failed_key, std::chrono::milliseconds(0));
  }
  COHORT_WARN(kColl, "backend auto: {} could not start ({}); every rank falls back to ps", name,
              cause);
  return fallback(config);
}

}  // namespace cohort::collectives
