// `cohort ps-server`: one shard of the parameter server behind the `ps` backend
// (collectives/ps/). `cohort launch --ps-servers N` starts them itself; this runs one by hand.
#pragma once

#include "launcher/command.h"

namespace cohort::launcher {

// Adds `ps-server --port P --shard I --shards N [--host H] [--token T]`; running it serves until
// SIGINT or SIGTERM.
Command AddPsServerCommand(CLI::App& parent);

}  // namespace cohort::launcher
