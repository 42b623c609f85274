// The join step every backend starts with: each rank announces itself on the store and waits for
// the others, so that a rank that never arrives is named instead of waited on forever.
#pragma once

#include <chrono>
#include <string>

#include "collectives/store/store.h"

namespace cohort::collectives {

// Sets "<scope>/<what>/join/<rank>" and waits until all size ranks have. On timeout throws Timeout
// naming the ranks that never joined. what names the caller in the message ("gloo").
void JoinGroup(Store& store, const std::string& scope, int rank, int size,
               std::chrono::milliseconds timeout, const std::string& what);

}  // namespace cohort::collectives
