// `cohort checkpoint ls|verify|inspect URI`: look at snapshots in any object store (file://,
// s3://, a plain path). URI is a snapshot (".../run7/step-000000000100"), one run's folder or a
// folder of runs.
#pragma once

#include "launcher/command.h"

namespace cohort::launcher {

// ls: each snapshot with its step, world size, status and size (cheap: sizes, no digests).
// verify: recomputes every digest, names each bad shard; exit 1 when a complete snapshot (or
//         the one named) is bad.
// inspect: a snapshot's manifest, metadata and tensors (name, dtype, shape, bytes).
Command AddCheckpointCommand(CLI::App& parent);

}  // namespace cohort::launcher
