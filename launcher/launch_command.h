// `cohort launch`: start and supervise the workers of a job on this node.
#pragma once

#include <string>
#include <vector>

#include "launcher/command.h"

namespace cohort::launcher {

Command AddLaunchCommand(CLI::App& parent);

// Removes PROGRAM ARGS... from the arguments of `cohort launch` (args[start..]): everything after
// `--`, or from the first argument that is neither an option nor an option's value. CLI11 then
// parses only the launcher's own options, and the program's are never mistaken for them.
void SplitLaunchProgram(std::vector<std::string>& args, size_t start);

}  // namespace cohort::launcher
