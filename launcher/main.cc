// The `cohort` command. Each subcommand lives in its own file (launcher/<name>_command.cc) and
// is registered by one line in kCommands.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <vector>

#include "common/error.h"
#include "launcher/command.h"
#include "launcher/store_command.h"

namespace {

using cohort::launcher::AddCommandFn;
using cohort::launcher::Command;

// Every subcommand, in the order --help lists them.
constexpr AddCommandFn kCommands[] = {
    cohort::launcher::AddStoreCommand,
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cohort: run distributed training of libtorch models (NCCL, MPI, Gloo or a parameter "
      "server) on a laptop, under mpirun, or in Kubernetes."};
  app.name("cohort");
  app.set_version_flag("--version", COHORT_VERSION);
  app.require_subcommand(1, 1);
  app.footer("Run `cohort <command> --help` for a command's options.");

  std::vector<Command> commands;
  for (AddCommandFn add : kCommands) commands.push_back(add(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const Command& command : commands) {
    if (!command.app->parsed()) continue;
    try {
      return command.run();
    } catch (const cohort::Error& e) {
      fmt::print(stderr, "cohort {}: error ({}): {}\n", command.app->get_name(),
                 cohort::ErrorKindName(e.kind()), e.what());
      return 1;
    } catch (const std::exception& e) {
      fmt::print(stderr, "cohort {}: internal error: {}\n", command.app->get_name(), e.what());
      return 1;
    }
  }
  return 1;  // unreachable: require_subcommand(1) makes parse fail without one
}
