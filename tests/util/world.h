// Starting a world of worker processes the way the multi-process tests do: directly, one process
// per rank with the env contract (COHORT_RANK, COHORT_WORLD_SIZE), or under mpirun.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "tests/util/subprocess.h"

namespace cohort::testing {

// Runs `world` copies of argv, each with env added to its environment, and waits for all with
// one deadline. backend "mpi" (in a build with MPI): one mpirun that forwards env's COHORT_* and
// *_NUM_THREADS variables, and one result holding every rank's output; otherwise one result per
// rank, in rank order.
std::vector<ProcessResult> RunWorld(const std::string& backend, int world,
                                    const std::vector<std::string>& argv,
                                    std::map<std::string, std::string> env,
                                    std::chrono::milliseconds timeout);

}  // namespace cohort::testing
