// Supervision of one node's workers across attempts: hosts or joins the store, runs a rendezvous
// round per attempt, starts the workers, and watches them (exits, heartbeats, the other nodes'
// failures, SIGTERM/SIGINT). A failure anywhere stops every node's group; the group restarts with
// COHORT_RESTART incremented, up to --max-restarts.
#pragma once

#include "launcher/launch_plan.h"

namespace cohort::launcher {

// Exit codes of `cohort launch` besides 0 and a failed worker's own code (128 + N when signal N
// killed it).
inline constexpr int kExitUsage = 2;       // bad flags or environment, or the program cannot run
inline constexpr int kExitRendezvous = 3;  // the nodes could not form the job
inline constexpr int kExitHung = 124;      // a worker stopped heartbeating

// Runs the plan to the end and returns the process exit code.
int Supervise(const LaunchPlan& plan);

}  // namespace cohort::launcher
