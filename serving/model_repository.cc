#include "serving/model_repository.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "common/error.h"

namespace cohort::serving {
namespace {

// "<model>/<digits>/model.pt" -> digits as an int, else 0.
int VersionOf(const std::string& key, const std::string& model) {
  const std::string head = model + "/";
  const std::string tail = "/model.pt";
  if (key.size() <= head.size() + tail.size() || key.rfind(head, 0) != 0 ||
      key.compare(key.size() - tail.size(), tail.size(), tail) != 0)
    return 0;
  const std::string digits = key.substr(head.size(), key.size() - head.size() - tail.size());
  if (digits.empty() || digits.size() > 9 || digits[0] == '0') return 0;
  for (char c : digits) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return 0;
  }
  return std::stoi(digits);
}

}  // namespace

void CheckModelName(const std::string& name) {
  bool ok = !name.empty() && name[0] != '.' && name.size() <= 256;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
      ok = false;
  }
  if (!ok)
    throw InvalidArgument(fmt::format(
        "model name '{}' must be letters, digits, '_', '-' or '.' (not starting with '.'): it "
        "names the Triton folder and the MLflow registered model",
        name));
}

ModelRepository::ModelRepository(const std::string& uri)
    : store_(checkpoint::OpenObjectStore(uri)) {}

ModelRepository::ModelRepository(std::shared_ptr<checkpoint::ObjectStore> store)
    : store_(std::move(store)) {}

std::string ModelRepository::Uri() const { return store_->Uri(); }

std::string ModelRepository::UriOf(const std::string& key) const {
  std::string root = store_->Uri();
  while (!root.empty() && root.back() == '/') root.pop_back();
  return root + "/" + key;
}

std::vector<int> ModelRepository::Versions(const std::string& model) const {
  CheckModelName(model);
  std::set<int> versions;
  for (const auto& object : store_->List(model + "/")) {
    if (int v = VersionOf(object.key, model); v > 0) versions.insert(v);
  }
  return {versions.begin(), versions.end()};
}

WrittenVersion ModelRepository::Write(const std::string& model, const std::string& model_pt,
                                      const std::string& config_pbtxt, int version) {
  const std::vector<int> existing = Versions(model);
  if (version < 0) throw InvalidArgument(fmt::format("model version {} must be positive", version));
  if (version == 0) version = existing.empty() ? 1 : existing.back() + 1;
  if (std::find(existing.begin(), existing.end(), version) != existing.end())
    throw InvalidArgument(fmt::format(
        "{} already exists; versions are never overwritten (omit the version to write {})",
        UriOf(fmt::format("{}/{}/model.pt", model, version)), existing.back() + 1));
  WrittenVersion w;
  w.version = version;
  const std::string model_key = fmt::format("{}/{}/model.pt", model, version);
  const std::string config_key = model + "/config.pbtxt";
  store_->Put(model_key, model_pt);
  store_->Put(config_key, config_pbtxt);
  w.model_uri = UriOf(model_key);
  w.config_uri = UriOf(config_key);
  return w;
}

}  // namespace cohort::serving
