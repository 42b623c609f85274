// `cohort model register|promote|manifest`: trained models into serving.
//   register  --snapshot URI|--model FILE --name NAME --repo URI [--example-input-shape 1,28,28]
//             runs cohort-export (next to this program: export needs libtorch, which `cohort`
//             does not link) to export, write the Triton repository and register with MLflow
//             when MLFLOW_TRACKING_URI is set.
//   promote   NAME VERSION --alias ALIAS: points an MLflow alias at a version (moving it).
//   manifest  NAME --repo URI [--canary-percent N]: prints the KServe InferenceService.
#pragma once

#include "launcher/command.h"

namespace cohort::launcher {

Command AddModelCommand(CLI::App& parent);

}  // namespace cohort::launcher
