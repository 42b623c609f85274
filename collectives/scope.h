// Where a communicator's keys live on the store, computable before the communicator exists
// (auto's agreement on a backend happens before any backend's constructor has finished).
#pragma once

#include <string>

#include "collectives/communicator.h"

namespace cohort::collectives {

// "cohort/<run_id>/<restart>/comm/<name>": Communicator::Scope() of a communicator with config.
std::string ScopeOf(const CommConfig& config);

}  // namespace cohort::collectives
