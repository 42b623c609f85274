#include "serving/publish.h"

#include <fmt/format.h>

#include <cctype>

#include "common/error.h"

namespace cohort::serving {
namespace {

// The version tag that ties an MLflow version to its folder in the repository (the two are
// numbered independently: a repository can be written without MLflow).
constexpr const char* kRepositoryVersionTag = "cohort.repository_version";

tracking::ModelVersion RegisterVersion(tracking::MlflowClient& client, const PublishRequest& r,
                                       const WrittenVersion& written, const std::string& run_id) {
  std::vector<tracking::KeyValue> tags = r.tags;
  tags.emplace_back(kRepositoryVersionTag, std::to_string(written.version));
  try {
    tracking::ModelVersion v = client.CreateModelVersion(r.name, written.model_uri, run_id, tags);
    if (!r.alias.empty()) client.SetAlias(r.name, r.alias, v.version);
    return v;
  } catch (const Error& e) {
    ThrowError(e.kind(),
               fmt::format("{} was written but not registered: {}", written.model_uri, e.what()));
  }
}

}  // namespace

void CheckAlias(const std::string& alias) {
  bool ok = !alias.empty() && alias.size() <= 255 && alias != "latest";
  for (char c : alias) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') ok = false;
  }
  if (ok && (alias[0] == 'v' || alias[0] == 'V') && alias.size() > 1) {
    bool digits = true;
    for (size_t i = 1; i < alias.size(); ++i)
      digits &= std::isdigit(static_cast<unsigned char>(alias[i])) != 0;
    if (digits) ok = false;
  }
  if (!ok)
    throw InvalidArgument(fmt::format(
        "alias '{}' is not one MLflow accepts: use letters, digits, '_' or '-', not 'latest' or "
        "'v<number>' (e.g. candidate, champion)",
        alias));
}

std::string PublishResult::Summary() const {
  std::string line = fmt::format("wrote {} (version {}) and {}", written.model_uri, written.version,
                                 written.config_uri);
  if (registered) {
    line +=
        fmt::format("; registered {} version {} in MLflow", registered->name, registered->version);
    if (!alias.empty()) line += fmt::format(" as @{}", alias);
  }
  return line;
}

PublishResult Publish(const PublishRequest& r) {
  CheckModelName(r.name);
  if (!r.alias.empty()) CheckAlias(r.alias);
  TritonConfig config = r.config;
  config.name = r.name;
  const std::string pbtxt = RenderConfigPbtxt(config);  // refuses a bad config before any write

  std::optional<tracking::MlflowClient> client;
  if (r.mlflow) {
    client.emplace(*r.mlflow);
    client->EnsureRegisteredModel(r.name);
  }
  PublishResult result;
  ModelRepository repo(r.repo_uri);
  result.written = repo.Write(r.name, r.model_pt, pbtxt);
  if (client) {
    const std::string run_id = r.run_id.empty() ? r.mlflow->run_id : r.run_id;
    result.registered = RegisterVersion(*client, r, result.written, run_id);
    result.alias = r.alias;
  }
  return result;
}

}  // namespace cohort::serving
