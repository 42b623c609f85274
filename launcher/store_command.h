// `cohort store`: a standalone rendezvous store, for jobs whose launchers do not host one
// (e.g. `mpirun` without the launcher, or a store on a separate, long-lived machine).
#pragma once

#include "launcher/command.h"

namespace cohort::launcher {

// Adds `store --port P [--host H] [--token T]`; running it serves until SIGINT or SIGTERM.
Command AddStoreCommand(CLI::App& parent);

}  // namespace cohort::launcher
