#include "checkpoint/loader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <memory>

#include "checkpoint/shard_file.h"
#include "common/error.h"
#include "common/log.h"

namespace cohort::checkpoint {

LoadedSnapshot LoadSnapshot(const RunDir& run, const std::string& name,
                            const LoadOptions& options) {
  LoadedSnapshot out;
  out.name = name;
  out.uri = run.Uri(name);
  auto manifest = ReadManifest(run, name);
  if (!manifest) {
    throw DataLoss(fmt::format("{} has no {}: it is incomplete (its save did not finish)", out.uri,
                               kManifestName));
  }
  out.manifest = std::move(*manifest);
  std::vector<int> ranks = options.ranks;
  if (ranks.empty()) {
    for (const ShardEntry& e : out.manifest.shards) ranks.push_back(e.rank);
  }
  for (int rank : ranks) {
    const ShardEntry* entry = out.manifest.Find(rank);
    if (entry == nullptr) {
      throw InvalidArgument(fmt::format("{} has no shard of rank {} (it was saved by {} rank(s))",
                                        out.uri, rank, out.manifest.world_size));
    }
    const std::string rel = name + "/" + entry->object;
    auto bytes = run.store->Get(run.Key(rel));
    if (!bytes) throw DataLoss(fmt::format("{}: missing", run.Uri(rel)));
    const std::string problem = CheckShardBytes(*entry, *bytes);
    if (!problem.empty()) throw DataLoss(fmt::format("{}: {}", out.uri, problem));
    auto file = std::make_shared<const std::string>(std::move(*bytes));
    ShardHeader header;
    Shard shard = DecodeShard(std::move(file), run.Uri(rel), &header);
    if (header.rank != rank || shard.step != out.manifest.step) {
      throw DataLoss(fmt::format("{}: holds rank {} step {}, the manifest says rank {} step {}",
                                 run.Uri(rel), header.rank, shard.step, rank, out.manifest.step));
    }
    out.shards.emplace(rank, std::move(shard));
  }
  return out;
}

std::optional<LoadedSnapshot> LoadLatest(const RunDir& run, const LoadOptions& options) {
  std::vector<std::string> warnings;
  std::string latest_warning;
  const std::vector<std::string> candidates = ResumeCandidates(run, &latest_warning);
  if (!latest_warning.empty()) {
    warnings.push_back(latest_warning);
    COHORT_WARN(kCheckpoint, "{}", latest_warning);
  }
  if (candidates.empty()) {
    const std::vector<SnapshotEntry> entries = ListSnapshots(run);
    if (!entries.empty()) {
      COHORT_WARN(kCheckpoint, "{}: {} snapshot folder(s) but none complete; starting fresh",
                  run.Uri(), entries.size());
    }
    return std::nullopt;
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    try {
      LoadedSnapshot loaded = LoadSnapshot(run, candidates[i], options);
      loaded.warnings.insert(loaded.warnings.begin(), warnings.begin(), warnings.end());
      return loaded;
    } catch (const DataLoss& e) {
      const std::string next = i + 1 < candidates.size()
                                   ? fmt::format("falling back to {}", candidates[i + 1])
                                   : std::string("no older complete snapshot left");
      warnings.push_back(
          fmt::format("skipping snapshot {}: {}; {}", candidates[i], e.what(), next));
      COHORT_WARN(kCheckpoint, "{}", warnings.back());
    }
  }
  throw DataLoss(fmt::format("no snapshot in {} loads: {}", run.Uri(), fmt::join(warnings, " | ")));
}

std::optional<LoadedSnapshot> LoadUri(const std::string& uri, const LoadOptions& options) {
  Location loc = ResolveUri(uri);
  if (loc.snapshot) return LoadSnapshot(loc.run(), *loc.snapshot, options);
  return LoadLatest(loc.run(), options);
}

}  // namespace cohort::checkpoint
