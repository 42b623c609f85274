// A `cohort` subcommand: each lives in its own file and provides one Add*Command function that
// main.cc lists.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace cohort::launcher {

struct Command {
  CLI::App* app;             // the parsed subcommand, owned by the parent app
  std::function<int()> run;  // runs it after parsing; returns the process exit code
};

// Registers a subcommand on the top-level app; its options bind to state the Command owns.
using AddCommandFn = Command (*)(CLI::App& parent);

}  // namespace cohort::launcher
