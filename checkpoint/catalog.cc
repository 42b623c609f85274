#include "checkpoint/catalog.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>

#include "checkpoint/digest.h"
#include "common/error.h"
#include "common/log.h"

namespace cohort::checkpoint {
namespace {

constexpr uint64_t kVerifyChunk = 64ull << 20;

std::string Trim(std::string s) {
  const size_t end = s.find_last_not_of(" \t\r\n");
  s.resize(end == std::string::npos ? 0 : end + 1);
  return s.substr(std::min(s.size(), s.find_first_not_of(" \t\r\n")));
}

}  // namespace

RunDir RunDir::Of(ObjectStore& store, const std::string& run) {
  std::string prefix = run;
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (!prefix.empty()) prefix += '/';
  return RunDir{&store, prefix};
}

std::string RunDir::Uri(const std::string& relative) const {
  std::string base = store->Uri();
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string rest = prefix + relative;
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  return rest.empty() ? base : base + "/" + rest;
}

std::vector<SnapshotEntry> ListSnapshots(const RunDir& run) {
  std::map<int64_t, SnapshotEntry> by_step;
  for (const ObjectInfo& info : run.store->List(run.prefix)) {
    const std::string rel = info.key.substr(run.prefix.size());
    const size_t slash = rel.find('/');
    if (slash == std::string::npos || rel.find('/', slash + 1) != std::string::npos) continue;
    const std::string name = rel.substr(0, slash);
    const auto step = ParseSnapshotName(name);
    if (!step) continue;
    SnapshotEntry& e = by_step[*step];
    e.name = name;
    e.step = *step;
    e.bytes += info.size;
    if (rel.substr(slash + 1) == kManifestName) e.has_manifest = true;
  }
  std::vector<SnapshotEntry> out;
  for (auto& [step, e] : by_step) out.push_back(std::move(e));
  return out;
}

std::optional<std::string> ReadLatest(const RunDir& run) {
  auto text = run.store->Get(run.Key(kLatestName));
  if (!text) return std::nullopt;
  std::string name = Trim(*text);
  if (!ParseSnapshotName(name)) {
    COHORT_WARN(kCheckpoint, "{} holds '{}', not a snapshot name; ignoring it",
                run.Uri(kLatestName), name.substr(0, 64));
    return std::nullopt;
  }
  return name;
}

std::vector<std::string> ResumeCandidates(const RunDir& run, std::string* warning) {
  std::vector<SnapshotEntry> entries = ListSnapshots(run);
  std::reverse(entries.begin(), entries.end());  // newest first
  std::vector<std::string> candidates;
  int64_t below = INT64_MAX;
  if (const auto latest = ReadLatest(run)) {
    const auto it = std::find_if(entries.begin(), entries.end(),
                                 [&](const SnapshotEntry& e) { return e.name == *latest; });
    if (it != entries.end() && it->has_manifest) {
      candidates.push_back(*latest);
      below = it->step;
    } else if (warning) {
      *warning = fmt::format("{} names {}, which {}", run.Uri(kLatestName), *latest,
                             it == entries.end() ? "does not exist" : "is incomplete");
    }
  }
  for (const SnapshotEntry& e : entries) {
    if (e.has_manifest && e.step < below) candidates.push_back(e.name);
  }
  return candidates;
}

std::optional<Manifest> ReadManifest(const RunDir& run, const std::string& name) {
  const std::string rel = name + "/" + kManifestName;
  auto text = run.store->Get(run.Key(rel));
  if (!text) return std::nullopt;
  return Manifest::Parse(*text, run.Uri(rel));
}

std::string CheckShardBytes(const ShardEntry& entry, const std::string& bytes) {
  if (bytes.size() != entry.size) {
    return fmt::format("{}: {} bytes but the manifest says {} ({})", entry.object, bytes.size(),
                       entry.size, bytes.size() < entry.size ? "truncated" : "too long");
  }
  const std::string digest = Digest(DigestAlgorithmOf(entry.digest), bytes.data(), bytes.size());
  if (digest != entry.digest) {
    return fmt::format("{}: digest {} does not match the manifest's {} (corrupt)", entry.object,
                       digest, entry.digest);
  }
  return "";
}

SnapshotCheck CheckSnapshot(const RunDir& run, const std::string& name, bool digests) {
  SnapshotCheck check;
  check.name = name;
  check.step = ParseSnapshotName(name).value_or(-1);
  try {
    check.manifest = ReadManifest(run, name);
  } catch (const DataLoss& e) {
    check.complete = true;
    check.problems.push_back(e.what());
    return check;
  }
  if (!check.manifest) {
    check.problems.push_back(
        fmt::format("{}: no {} (incomplete: a save did not finish)", run.Uri(name), kManifestName));
    return check;
  }
  check.complete = true;
  const Manifest& m = *check.manifest;
  if (m.step != check.step) {
    check.problems.push_back(
        fmt::format("{}: manifest says step {} in folder {}", kManifestName, m.step, name));
  }
  for (const ShardEntry& entry : m.shards) {
    const std::string key = run.Key(name + "/" + entry.object);
    const auto head = run.store->Head(key);
    if (!head) {
      check.problems.push_back(fmt::format("{}: missing", entry.object));
      continue;
    }
    if (head->size != entry.size) {
      check.problems.push_back(fmt::format("{}: {} bytes but the manifest says {} ({})",
                                           entry.object, head->size, entry.size,
                                           head->size < entry.size ? "truncated" : "too long"));
      continue;
    }
    if (!digests) continue;
    auto hasher = NewHasher(DigestAlgorithmOf(entry.digest));
    uint64_t read = 0;
    while (read < entry.size) {
      const std::string chunk =
          run.store->GetRange(key, read, std::min(kVerifyChunk, entry.size - read));
      if (chunk.empty()) break;
      hasher->Update(chunk.data(), chunk.size());
      read += chunk.size();
    }
    const std::string digest = hasher->Finish();
    if (read != entry.size) {
      check.problems.push_back(
          fmt::format("{}: read {} of {} bytes (truncated)", entry.object, read, entry.size));
    } else if (digest != entry.digest) {
      check.problems.push_back(
          fmt::format("{}: digest {} does not match the manifest's {} "
                      "(corrupt)",
                      entry.object, digest, entry.digest));
    }
  }
  check.ok = check.problems.empty();
  return check;
}

void DeleteSnapshot(const RunDir& run, const std::string& name) {
  const std::string folder = run.Key(name + "/");
  run.store->Delete(folder + kManifestName);
  for (const ObjectInfo& info : run.store->List(folder)) run.store->Delete(info.key);
}

std::vector<std::string> ApplyRetention(const RunDir& run, const std::string& newest, int keep) {
  const auto newest_step = ParseSnapshotName(newest);
  if (!newest_step) throw InvalidArgument(fmt::format("'{}' is not a snapshot name", newest));
  std::vector<SnapshotEntry> entries = ListSnapshots(run);
  std::reverse(entries.begin(), entries.end());  // newest first
  std::vector<std::string> deleted;
  int kept = 1;  // `newest` itself
  for (const SnapshotEntry& e : entries) {
    if (e.step >= *newest_step) continue;
    const bool drop = !e.has_manifest || (keep > 0 && kept >= keep);
    if (!drop) {
      ++kept;
      continue;
    }
    DeleteSnapshot(run, e.name);
    deleted.push_back(e.name);
  }
  return deleted;
}

std::vector<std::string> FindRunPrefixes(ObjectStore& store) {
  std::set<std::string> prefixes;
  for (const ObjectInfo& info : store.List("")) {
    // ".../step-<N>/<object>": the run folder is what comes before step-<N>/.
    const size_t last = info.key.rfind('/');
    if (last == std::string::npos || last == 0) continue;
    const size_t before = info.key.rfind('/', last - 1);
    const size_t start = before == std::string::npos ? 0 : before + 1;
    if (!ParseSnapshotName(info.key.substr(start, last - start))) continue;
    prefixes.insert(info.key.substr(0, start));
  }
  return {prefixes.begin(), prefixes.end()};
}

Location ResolveUri(const std::string& uri) {
  std::string trimmed = uri;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  Location loc;
  const size_t slash = trimmed.rfind('/');
  if (slash != std::string::npos && slash > 0 && ParseSnapshotName(trimmed.substr(slash + 1)) &&
      trimmed.compare(slash - 1, 2, "//") != 0) {
    loc.snapshot = trimmed.substr(slash + 1);
    loc.store = OpenObjectStore(trimmed.substr(0, slash));
  } else {
    loc.store = OpenObjectStore(trimmed);
  }
  return loc;
}

}  // namespace cohort::checkpoint
