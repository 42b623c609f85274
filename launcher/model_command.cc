#include "launcher/model_command.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "serving/inference_service.h"
#include "serving/model_repository.h"
#include "serving/publish.h"
#include "tracking/mlflow_client.h"

namespace cohort::launcher {
namespace {

struct ModelOptions {
  CLI::App* register_app = nullptr;
  CLI::App* promote_app = nullptr;
  CLI::App* manifest_app = nullptr;
  std::string name, version, alias, repo, service_name, namespace_;
  int canary_percent = -1;
  int repo_version = 0;
};

std::string ProgramDir() {
  char path[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "";
  const std::string exe(path, static_cast<size_t>(n));
  return exe.substr(0, exe.rfind('/') + 1);
}

// Replaces this process with cohort-export: its output, errors and exit status are the
// command's own.
int RunRegister(const ModelOptions& o) {
  const std::string exporter = ProgramDir() + "cohort-export";
  std::vector<std::string> args = {exporter, "register"};
  for (const std::string& a : o.register_app->remaining()) args.push_back(a);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  execv(exporter.c_str(), argv.data());
  throw Unavailable(fmt::format(
      "cannot run {} ({}): it does the export (it links libtorch, cohort does not); build it "
      "with the libtorch build (cmake --build build --target cohort-export)",
      exporter, std::strerror(errno)));
}

tracking::MlflowConfig MlflowFromEnv(const char* command) {
  std::optional<tracking::MlflowConfig> c = tracking::MlflowConfig::FromEnv();
  if (!c)
    throw InvalidArgument(
        fmt::format("cohort model {} needs the MLflow server: set MLFLOW_TRACKING_URI (e.g. "
                    "http://127.0.0.1:5000)",
                    command));
  return *c;
}

int RunPromote(const ModelOptions& o) {
  serving::CheckAlias(o.alias);
  tracking::MlflowClient client(MlflowFromEnv("promote"));
  client.SetAlias(o.name, o.alias, o.version);
  fmt::print("{}@{} -> version {}\n", o.name, o.alias, o.version);
  return 0;
}

int RunManifest(const ModelOptions& o) {
  serving::ModelRepository repo(o.repo);
  const std::vector<int> versions = repo.Versions(o.name);
  if (versions.empty())
    throw InvalidArgument(
        fmt::format("{} has no versions of model '{}'; run `cohort model "
                    "register --name {} --repo {}` first",
                    repo.Uri(), o.name, o.name, o.repo));
  serving::InferenceServiceSpec spec;
  spec.name = o.service_name.empty() ? o.name : o.service_name;
  spec.namespace_ = o.namespace_;
  spec.storage_uri = repo.Uri();
  spec.model = o.name;
  spec.version = o.repo_version > 0 ? o.repo_version : versions.back();
  if (std::find(versions.begin(), versions.end(), spec.version) == versions.end())
    throw InvalidArgument(fmt::format("{} has no version {} of '{}' (it has {})", repo.Uri(),
                                      spec.version, o.name, fmt::join(versions, ", ")));
  if (o.canary_percent >= 0) spec.canary_percent = o.canary_percent;
  // GPU instances need a GPU in the pod: follow the config.pbtxt Triton will read.
  auto store = checkpoint::OpenObjectStore(o.repo);
  const auto config = store->Get(o.name + "/config.pbtxt");
  spec.gpu = config && config->find("KIND_GPU") != std::string::npos;
  if (spec.storage_uri.rfind("file://", 0) == 0)
    fmt::print(stderr,
               "cohort model manifest: warning: KServe cannot fetch {}; copy the repository to "
               "s3:// or a PVC and pass that as --repo\n",
               spec.storage_uri);
  fmt::print("{}", serving::RenderInferenceService(spec));
  return 0;
}

}  // namespace

Command AddModelCommand(CLI::App& parent) {
  auto o = std::make_shared<ModelOptions>();
  CLI::App* app = parent.add_subcommand(
      "model", "Export, register and serve trained models (Triton, MLflow, KServe)");
  app->require_subcommand(1, 1);

  o->register_app = app->add_subcommand(
      "register",
      "export a snapshot (--snapshot URI) or TorchScript file (--model FILE) into a Triton "
      "repository (--repo URI) as --name NAME, registered in MLflow when MLFLOW_TRACKING_URI is "
      "set; `cohort model register --help` for every option");
  o->register_app->prefix_command();  // everything goes to cohort-export, --help included
  o->register_app->set_help_flag();

  o->promote_app = app->add_subcommand("promote", "point an MLflow alias at a model version");
  o->promote_app->add_option("name", o->name, "registered model")->required();
  o->promote_app->add_option("version", o->version, "model version")->required();
  o->promote_app->add_option("--alias", o->alias, "e.g. champion")->required();

  o->manifest_app = app->add_subcommand("manifest", "print the KServe InferenceService");
  o->manifest_app->add_option("name", o->name, "the model in the repository")->required();
  o->manifest_app->add_option("--repo", o->repo, "the Triton repository (storageUri)")->required();
  o->manifest_app
      ->add_option("--canary-percent", o->canary_percent,
                   "traffic for the new revision (canaryTrafficPercent)")
      ->check(CLI::Range(0, 100));
  o->manifest_app->add_option("--version", o->repo_version, "repository version (default: newest)");
  o->manifest_app->add_option("--service-name", o->service_name, "metadata.name (default NAME)");
  o->manifest_app->add_option("--namespace", o->namespace_, "metadata.namespace");

  return Command{app, [o]() -> int {
                   if (o->register_app->parsed()) return RunRegister(*o);
                   if (o->promote_app->parsed()) return RunPromote(*o);
                   return RunManifest(*o);
                 }};
}

}  // namespace cohort::launcher
