// `cohort render`: prints the Kubernetes manifests of a TrainingJob (launcher/render.h).
#pragma once

#include "launcher/command.h"

namespace cohort::launcher {

// Adds `render FILE [--format yaml|json] [--token-secret NAME | --insecure-no-token]`.
Command AddRenderCommand(CLI::App& parent);

}  // namespace cohort::launcher
