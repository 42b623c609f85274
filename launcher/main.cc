// The `cohort` command. Each subcommand lives in its own file (launcher/<name>_command.cc) and
// is registered by one line in kCommands.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "launcher/checkpoint_command.h"
#include "launcher/command.h"
#include "launcher/launch_command.h"
#include "launcher/model_command.h"
#include "launcher/ps_server_command.h"
#include "launcher/render_command.h"
#include "launcher/store_command.h"

namespace {

using cohort::launcher::AddCommandFn;
using cohort::launcher::Command;

// Every subcommand, in the order --help lists them.
constexpr AddCommandFn kCommands[] = {
    cohort::launcher::AddLaunchCommand,
    cohort::launcher::AddStoreCommand,
    cohort::launcher::AddPsServerCommand,
    cohort::launcher::AddCheckpointCommand,
    cohort::launcher::AddModelCommand,
    cohort::launcher::AddRenderCommand,
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

  std::vector<std::string> args(argv, argv + argc);
  if (args.size() > 1 && args[1] == "launch") cohort::launcher::SplitLaunchProgram(args, 2);
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  try {
    app.parse(static_cast<int>(cargs.size()), cargs.data());
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line saying what is wrong and where to look; exit code 2 like other usage errors.
    std::string what = e.what();
    for (char& c : what) {
      if (c == '\n') c = ' ';
    }
    std::string sub;
    for (const Command& command : commands) {
      if (command.app->parsed()) sub = " " + command.app->get_name();
    }
    fmt::print(stderr, "cohort{}: {}; see `cohort{} --help`\n", sub, what, sub);
    return 2;
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
