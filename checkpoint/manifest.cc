#include "checkpoint/manifest.h"

#include <fmt/format.h>

#include <ctime>
#include <set>

#include "checkpoint/digest.h"
#include "common/error.h"

namespace cohort::checkpoint {

std::string Manifest::ToJson() const {
  nlohmann::json shards_json = nlohmann::json::array();
  for (const ShardEntry& s : shards) {
    nlohmann::json e = {{"rank", s.rank},
                        {"object", s.object},
                        {"size", s.size},
                        {"digest", s.digest},
                        {"tensors", s.tensors}};
    if (!s.contents.is_null()) e["contents"] = s.contents;
    shards_json.push_back(std::move(e));
  }
  nlohmann::json j = {{"format", "cohort-snapshot"},
                      {"format_version", format_version},
                      {"run", run},
                      {"step", step},
                      {"epoch", epoch},
                      {"world_size", world_size},
                      {"layout", layout},
                      {"created", created},
                      {"shards", shards_json}};
  return j.dump(2) + "\n";
}

Manifest Manifest::Parse(const std::string& text, const std::string& what) {
  Manifest m;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.value("format", "") != "cohort-snapshot") {
      throw DataLoss("its \"format\" is not \"cohort-snapshot\"");
    }
    m.format_version = j.at("format_version").get<int>();
    if (m.format_version < 1 || m.format_version > kManifestFormatVersion) {
      throw DataLoss(fmt::format("format version {} (this cohort reads 1..{}): upgrade cohort",
                                 m.format_version, kManifestFormatVersion));
    }
    m.run = j.at("run").get<std::string>();
    m.step = j.at("step").get<int64_t>();
    m.epoch = j.value("epoch", int64_t{0});
    m.world_size = j.at("world_size").get<int>();
    m.layout = j.at("layout");
    m.created = j.value("created", "");
    std::set<int> ranks;
    for (const auto& s : j.at("shards")) {
      ShardEntry e;
      e.rank = s.at("rank").get<int>();
      e.object = s.at("object").get<std::string>();
      e.size = s.at("size").get<uint64_t>();
      e.digest = s.at("digest").get<std::string>();
      e.tensors = s.value("tensors", uint64_t{0});
      if (s.contains("contents")) e.contents = s.at("contents");
      DigestAlgorithmOf(e.digest);  // throws on a malformed digest
      if (e.rank < 0 || e.rank >= m.world_size || !ranks.insert(e.rank).second) {
        throw DataLoss(fmt::format("shard rank {} is repeated or outside world size {}", e.rank,
                                   m.world_size));
      }
      // Object names are plain file names: a manifest must not point outside its folder.
      if (e.object.empty() || e.object.find('/') != std::string::npos || e.object == "." ||
          e.object == "..") {
        throw DataLoss(fmt::format("shard object name '{}' is not a plain name", e.object));
      }
      m.shards.push_back(std::move(e));
    }
    if (m.world_size < 1 || m.shards.empty()) {
      throw DataLoss(fmt::format("world size {} with {} shards", m.world_size, m.shards.size()));
    }
  } catch (const nlohmann::json::exception& e) {
    throw DataLoss(fmt::format("{} is not a valid manifest: {}", what, e.what()));
  } catch (const DataLoss& e) {
    throw DataLoss(fmt::format("{} is not a valid manifest: {}", what, e.what()));
  }
  return m;
}

const ShardEntry* Manifest::Find(int rank) const {
  for (const ShardEntry& s : shards) {
    if (s.rank == rank) return &s;
  }
  return nullptr;
}

uint64_t Manifest::TotalBytes() const {
  uint64_t total = 0;
  for (const ShardEntry& s : shards) total += s.size;
  return total;
}

std::string SnapshotName(int64_t step) {
  if (step < 0) throw InvalidArgument(fmt::format("snapshot step {} is negative", step));
  return fmt::format("step-{:012d}", step);
}

std::optional<int64_t> ParseSnapshotName(const std::string& name) {
  constexpr size_t kPrefix = 5;  // "step-"
  if (name.size() <= kPrefix || name.compare(0, kPrefix, "step-") != 0 || name.size() > 24 ||
      name.find_first_not_of("0123456789", kPrefix) != std::string::npos) {
    return std::nullopt;
  }
  return std::stoll(name.substr(kPrefix));
}

std::string ShardObjectName(int rank) { return fmt::format("rank-{}.h5", rank); }

}  // namespace cohort::checkpoint
