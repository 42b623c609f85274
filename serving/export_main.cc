// cohort-export: the libtorch half of `cohort model register`, a program of its own so that the
// `cohort` command stays free of libtorch (`cohort model register ARGS` runs
// `cohort-export register ARGS` from its own directory). Exports a snapshot (into a TorchScript
// skeleton) or a TorchScript file, writes the Triton repository and registers with MLflow when
// MLFLOW_TRACKING_URI is set. Errors are one line on stderr, exit status 1 (2 for usage).
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint/loader.h"
#include "common/error.h"
#include "serving/register_model.h"

namespace {

using cohort::serving::RegisterOptions;

struct Args {
  std::string snapshot, model;
  RegisterOptions options;
  std::string instance_kind = "gpu";
  bool dynamic_batching = false;
  std::vector<int> preferred_batch_size;
  uint64_t max_queue_delay_us = 0;
  std::vector<std::string> tags;
};

// <directory of this program>/skeletons/fashion_cnn.pt: where the build puts Fashion-MNIST's.
std::string DefaultSkeleton() {
  char path[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "skeletons/fashion_cnn.pt";
  std::string exe(path, static_cast<size_t>(n));
  return exe.substr(0, exe.rfind('/') + 1) + "skeletons/fashion_cnn.pt";
}

void AddOptions(CLI::App& app, Args& a) {
  auto* snapshot = app.add_option("--snapshot", a.snapshot,
                                  "a checkpoint snapshot (or run folder: its latest) to export");
  auto* model = app.add_option("--model", a.model, "a TorchScript file, registered as is");
  snapshot->excludes(model);
  app.add_option("--name", a.options.name, "the model's name (Triton folder, MLflow model)")
      ->required();
  app.add_option("--repo", a.options.repo_uri, "the Triton model repository (file://, s3://)")
      ->required();
  app.add_option("--example-input-shape", a.options.export_options.example_input_shape,
                 "one sample's shape, without the batch dimension")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--example-input-dtype", a.options.export_options.example_input_dtype)
      ->capture_default_str();
  a.options.skeleton_path = DefaultSkeleton();
  app.add_option("--skeleton", a.options.skeleton_path,
                 "TorchScript skeleton of the snapshot's architecture")
      ->capture_default_str();
  app.add_option("--max-batch-size", a.options.config.max_batch_size)->capture_default_str();
  app.add_option("--instance-kind", a.instance_kind, "gpu or cpu")->capture_default_str();
  app.add_option("--instance-count", a.options.config.instance_count)->capture_default_str();
  app.add_flag("--dynamic-batching", a.dynamic_batching, "enable Triton's dynamic batcher");
  app.add_option("--preferred-batch-size", a.preferred_batch_size)->delimiter(',');
  app.add_option("--max-queue-delay-us", a.max_queue_delay_us);
  app.add_option("--tag", a.tags, "KEY=VALUE tag on the MLflow model version (repeatable)");
  app.add_option("--alias", a.options.alias, "MLflow alias for the new version")
      ->capture_default_str();
  app.add_option("--run-id", a.options.run_id, "MLflow run id (default: MLFLOW_RUN_ID)");
}

int Register(Args& a) {
  if (a.snapshot.empty() == a.model.empty())
    throw cohort::InvalidArgument("pass one of --snapshot URI or --model FILE");
  RegisterOptions& o = a.options;
  o.config.instance_kind = cohort::serving::ParseInstanceKind(a.instance_kind);
  if (a.dynamic_batching || !a.preferred_batch_size.empty() || a.max_queue_delay_us > 0)
    o.config.dynamic_batching = {a.preferred_batch_size, a.max_queue_delay_us};
  for (const std::string& tag : a.tags) {
    const size_t eq = tag.find('=');
    if (eq == std::string::npos || eq == 0)
      throw cohort::InvalidArgument(fmt::format("--tag '{}' is not KEY=VALUE", tag));
    o.tags.emplace_back(tag.substr(0, eq), tag.substr(eq + 1));
  }
  cohort::serving::CheckModelName(o.name);
  cohort::serving::ExportedModel exported;
  if (!a.model.empty()) {
    exported = cohort::serving::ExportScriptedFile(a.model, o.export_options);
  } else {
    auto loaded = cohort::checkpoint::LoadUri(a.snapshot, {{0}});
    if (!loaded)
      throw cohort::InvalidArgument(fmt::format(
          "no complete snapshot under {}; pass a snapshot URI (.../step-<N>)", a.snapshot));
    exported =
        cohort::serving::ExportShard(loaded->shards.at(0), o.skeleton_path, o.export_options);
  }
  fmt::print("{}\n", cohort::serving::RegisterExported(std::move(exported), o).Summary());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cohort-export: the libtorch half of `cohort model register`"};
  app.name("cohort model");
  app.require_subcommand(1, 1);
  Args args;
  CLI::App* reg = app.add_subcommand(
      "register", "export a snapshot or TorchScript file into a Triton repository and MLflow");
  AddOptions(*reg, args);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string what = e.what();
    for (char& c : what) c = c == '\n' ? ' ' : c;
    fmt::print(stderr, "cohort model register: {}; see `cohort model register --help`\n", what);
    return 2;
  }
  try {
    return Register(args);
  } catch (const cohort::Error& e) {
    fmt::print(stderr, "cohort model register: error ({}): {}\n", cohort::ErrorKindName(e.kind()),
               e.what());
  } catch (const std::exception& e) {
    std::string what = e.what();
    fmt::print(stderr, "cohort model register: internal error: {}\n",
               what.substr(0, what.find('\n')));
  }
  return 1;
}
