// COHORT_BACKEND=auto with parameter servers configured: start the chosen collective backend on
// every rank, and if it cannot start on any one of them, every rank falls back to `ps` together.
// The ranks agree through the store, so that no job ever runs with some ranks on gloo and the
// others on ps (their collectives would never meet).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "collectives/communicator.h"

namespace cohort::collectives {

using CommFactory = std::function<std::unique_ptr<Communicator>(const CommConfig&)>;

// Starts `chosen` (named name) on this rank, then agrees with the others under
// "<Scope>/auto/": a rank that failed sets "failed" to "rank R: <why>" (the first reason wins)
// and every rank waiting on the store for its peers (inside the backend's own rendezvous, or in
// the agreement after its start) gives up at once; then all start `fallback` and log one line
// naming the reason. `why_not`, when not empty, says chosen cannot run here at all (nothing is
// started; the agreement is the same). Without config.store at config.size > 1 there is no
// agreement and no fallback: chosen's outcome (or why_not) stands. Throws Timeout naming the
// ranks that never reported, and what fallback throws.
std::unique_ptr<Communicator> StartAgreeingOrFallBack(const std::string& name,
                                                      const CommFactory& chosen,
                                                      const std::string& why_not,
                                                      const CommFactory& fallback,
                                                      const CommConfig& config);

}  // namespace cohort::collectives
