#include "checkpoint/consolidate.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <sstream>

#include "checkpoint/reshard.h"
#include "common/error.h"

namespace cohort::checkpoint {
namespace {

// Parameter positions of the unsharded model: each saved rank's "parameters" attribute (its
// parameter names in module order), ranks taken in pipeline-stage order. Empty when no rank
// recorded them (a save made outside runtime/sharded_state).
std::map<std::string, int> ParameterOrder(ShardedReader& reader) {
  const MeshSizes& mesh = reader.layout().mesh;
  std::vector<int> ranks(static_cast<size_t>(mesh.Ranks()));
  std::iota(ranks.begin(), ranks.end(), 0);
  std::stable_sort(ranks.begin(), ranks.end(),
                   [&](int a, int b) { return mesh.PpOf(a) < mesh.PpOf(b); });
  std::map<std::string, int> order;
  for (int rank : ranks) {
    const auto& attrs = reader.layout().ranks.at(rank).attributes;
    const auto it = attrs.find("parameters");
    if (it == attrs.end() || !std::holds_alternative<std::string>(it->second)) continue;
    std::istringstream names(std::get<std::string>(it->second));
    for (std::string name; std::getline(names, name);) {
      if (!name.empty() && !order.count(name)) order.emplace(name, static_cast<int>(order.size()));
    }
  }
  return order;
}

// optimizer/<parameter>/<field> -> optimizer/<k>/<field>, with k from order.
std::string DataParallelName(const std::string& name, const std::map<std::string, int>& order) {
  if (name.rfind("optimizer/", 0) != 0 || order.empty()) return name;
  const size_t last = name.rfind('/');
  const std::string param = name.substr(10, last - 10);
  const auto it = order.find(param);
  if (it == order.end()) {
    throw InvalidArgument(fmt::format(
        "checkpoint: optimizer state {} belongs to no parameter the ranks recorded", name));
  }
  return fmt::format("optimizer/{}{}", it->second, name.substr(last));
}

HostTensor Renamed(const HostTensor& t, const std::string& name) {
  if (t.name() == name) return t;
  auto owner = std::make_shared<HostTensor>(t);
  return HostTensor::Wrap(name, t.dtype(), t.shape(), t.data(), owner);
}

}  // namespace

ConsolidateResult ConsolidateSnapshot(const std::string& source_uri, const std::string& out_uri) {
  ShardedReader reader = ShardedReader::Open(source_uri);
  std::shared_ptr<ObjectStore> out = OpenObjectStore(out_uri);
  const RunDir out_run = RunDir::Of(*out, "");
  if (ReadManifest(out_run, reader.name())) {
    throw InvalidArgument(fmt::format("{} already holds a complete {}; pick an empty OUT_URI",
                                      out_run.Uri(), reader.name()));
  }
  const std::map<std::string, int> order = ParameterOrder(reader);
  Shard shard;
  shard.step = reader.manifest().step;
  shard.epoch = reader.manifest().epoch;
  for (const auto& [name, tensor] : reader.layout().tensors) {
    shard.tensors.push_back(Renamed(reader.ReadWhole(name), DataParallelName(name, order)));
  }
  if (auto own = reader.ReadLocal(0)) {
    for (HostTensor& t : own->tensors) shard.tensors.push_back(std::move(t));
    shard.attributes = std::move(own->attributes);
  }
  shard.attributes.erase("parameters");
  shard.attributes["world_size"] = int64_t{1};
  CheckpointOptions options;
  options.run = "";
  Checkpointer checkpointer(out, options);
  ConsolidateResult result;
  result.source = reader.uri();
  result.tensors = shard.tensors.size();
  result.saved = checkpointer.Save(shard);
  return result;
}

}  // namespace cohort::checkpoint
