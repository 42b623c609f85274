#include "launcher/checkpoint_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/catalog.h"
#include "checkpoint/consolidate.h"
#include "checkpoint/layout.h"
#include "checkpoint/loader.h"
#include "common/error.h"

namespace cohort::launcher {
namespace {

using checkpoint::Location;
using checkpoint::RunDir;

struct CheckpointOptions {
  std::string uri;
  std::string out_uri;  // consolidate
  std::vector<int> ranks;
};

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

// The runs a location holds: the one its snapshot belongs to, or every run folder under it.
std::vector<RunDir> RunsOf(const Location& loc) {
  if (loc.snapshot) return {loc.run()};
  std::vector<RunDir> runs;
  for (const std::string& prefix : checkpoint::FindRunPrefixes(*loc.store)) {
    runs.push_back(RunDir{loc.store.get(), prefix});
  }
  return runs;
}

std::string RunLabel(const RunDir& run) {
  return run.prefix.empty() ? "." : run.prefix.substr(0, run.prefix.size() - 1);
}

[[noreturn]] void NothingThere(const std::string& uri) {
  throw InvalidArgument(fmt::format(
      "no snapshots under {}: expected <run>/step-<N>/ folders there (or a snapshot URI ending "
      "in step-<N>)",
      uri));
}

int RunLs(const CheckpointOptions& o) {
  Location loc = checkpoint::ResolveUri(o.uri);
  const auto runs = RunsOf(loc);
  std::vector<std::vector<std::string>> rows;
  for (const RunDir& run : runs) {
    const auto latest = checkpoint::ReadLatest(run);
    for (const auto& e : checkpoint::ListSnapshots(run)) {
      if (loc.snapshot && e.name != *loc.snapshot) continue;
      const auto check = checkpoint::CheckSnapshot(run, e.name, /*digests=*/false);
      const std::string status = check.ok ? "complete" : check.complete ? "CORRUPT" : "incomplete";
      rows.push_back({RunLabel(run), e.name, std::to_string(e.step),
                      check.manifest ? std::to_string(check.manifest->world_size) : "-", status,
                      HumanBytes(e.bytes), latest && *latest == e.name ? "latest" : ""});
    }
  }
  if (rows.empty()) NothingThere(o.uri);
  const std::vector<std::string> header = {"RUN",    "SNAPSHOT", "STEP", "WORLD",
                                           "STATUS", "SIZE",     ""};
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& r : rows) width[c] = std::max(width[c], r[c].size());
  }
  rows.insert(rows.begin(), header);
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      const bool right = c == 2 || c == 3 || c == 5;
      line +=
          right ? fmt::format("{:>{}}  ", r[c], width[c]) : fmt::format("{:<{}}  ", r[c], width[c]);
    }
    line.erase(line.find_last_not_of(' ') + 1);
    fmt::print("{}\n", line);
  }
  return 0;
}

int RunVerify(const CheckpointOptions& o) {
  Location loc = checkpoint::ResolveUri(o.uri);
  int bad = 0, good = 0, seen = 0;
  for (const RunDir& run : RunsOf(loc)) {
    for (const auto& e : checkpoint::ListSnapshots(run)) {
      if (loc.snapshot && e.name != *loc.snapshot) continue;
      ++seen;
      const auto check = checkpoint::CheckSnapshot(run, e.name, /*digests=*/true);
      const std::string where = run.Uri(e.name);
      if (check.ok) {
        ++good;
        fmt::print("OK          {}  step {}, {} shard(s), {}\n", where, e.step,
                   check.manifest->shards.size(), HumanBytes(check.manifest->TotalBytes()));
      } else if (!check.complete) {
        // Not an error of a run: a save that never finished leaves such a folder, and loads
        // ignore it. Named explicitly, it is one.
        if (loc.snapshot) ++bad;
        fmt::print("INCOMPLETE  {}  no {} (a save that did not finish; ignored by loads)\n", where,
                   checkpoint::kManifestName);
      } else {
        ++bad;
        for (const std::string& problem : check.problems) {
          fmt::print("BAD         {}  {}\n", where, problem);
        }
      }
    }
    if (loc.snapshot) continue;
    if (const auto latest = checkpoint::ReadLatest(run)) {
      const auto check = checkpoint::CheckSnapshot(run, *latest, /*digests=*/false);
      fmt::print("latest      {} -> {}{}\n", run.Uri(checkpoint::kLatestName), *latest,
                 check.ok ? "" : " (not a good snapshot: loads fall back to an older one)");
    }
  }
  if (seen == 0) NothingThere(o.uri);
  fmt::print("{} good, {} bad\n", good, bad);
  return bad == 0 ? 0 : 1;
}

void PrintShard(int rank, const checkpoint::Shard& shard) {
  fmt::print("rank {}: step {}, epoch {}, {} tensor(s), {}\n", rank, shard.step, shard.epoch,
             shard.tensors.size(), HumanBytes(shard.TensorBytes()));
  for (const auto& [key, value] : shard.attributes) {
    fmt::print("  meta {} = {}\n", key, checkpoint::AttrToString(value));
  }
  size_t name_width = 4;
  for (const auto& t : shard.tensors) name_width = std::max(name_width, t.name().size());
  for (const auto& t : shard.tensors) {
    std::string shape = "[";
    for (size_t i = 0; i < t.shape().size(); ++i) {
      shape += (i ? "," : "") + std::to_string(t.shape()[i]);
    }
    shape += "]";
    fmt::print("  {:<{}}  {:<4}  {:<16}  {}\n", t.name(), name_width,
               collectives::DTypeName(t.dtype()), shape, HumanBytes(t.nbytes()));
  }
}

// A sharded snapshot's mesh and, per global tensor, which rank holds which box.
void PrintLayout(const checkpoint::LoadedSnapshot& snap) {
  const auto layout =
      checkpoint::ShardedLayout::Parse(snap.manifest, snap.uri + "/" + checkpoint::kManifestName);
  fmt::print(
      "mesh dp={} pp={} tp={} (rank order: tp fastest, then pp, then dp), {} global "
      "tensor(s)\n",
      layout.mesh.dp, layout.mesh.pp, layout.mesh.tp, layout.tensors.size());
  for (const auto& [name, t] : layout.tensors) {
    std::string shards;
    for (const auto& s : t.shards) {
      shards += fmt::format("{}rank {} {}", shards.empty() ? "" : ", ", s.rank, s.box.ToString());
    }
    fmt::print("  tensor {}  {}  {}: {}\n", name, collectives::DTypeName(t.dtype),
               checkpoint::ShapeToString(t.shape), shards);
  }
}

int RunInspect(const CheckpointOptions& o) {
  Location loc = checkpoint::ResolveUri(o.uri);
  checkpoint::LoadOptions load;
  load.ranks = o.ranks;
  std::optional<checkpoint::LoadedSnapshot> snap;
  if (loc.snapshot) {
    snap = checkpoint::LoadSnapshot(loc.run(), *loc.snapshot, load);
  } else {
    const auto runs = RunsOf(loc);
    if (runs.empty()) NothingThere(o.uri);
    if (runs.size() > 1) {
      throw InvalidArgument(fmt::format("{} holds {} runs ({}, ...); inspect one of them, e.g. {}",
                                        o.uri, runs.size(), RunLabel(runs[0]), runs[0].Uri()));
    }
    snap = checkpoint::LoadLatest(runs[0], load);
    if (!snap) {
      throw DataLoss(fmt::format("{} has no complete snapshot", runs[0].Uri()));
    }
  }
  for (const std::string& w : snap->warnings) fmt::print("warning: {}\n", w);
  const auto& m = snap->manifest;
  fmt::print("snapshot {}\n", snap->uri);
  fmt::print("run {}, step {}, epoch {}, world size {}, layout {}, created {}\n",
             m.run.empty() ? "-" : m.run, m.step, m.epoch, m.world_size,
             checkpoint::IsShardedLayout(m.layout) ? "sharded" : m.layout.dump(), m.created);
  if (checkpoint::IsShardedLayout(m.layout)) PrintLayout(*snap);
  for (const auto& s : m.shards) {
    fmt::print("shard {}  rank {}  {}  {}  {} tensor(s)\n", s.object, s.rank, HumanBytes(s.size),
               s.digest, s.tensors);
  }
  for (const auto& [rank, shard] : snap->shards) PrintShard(rank, shard);
  return 0;
}

int RunConsolidate(const CheckpointOptions& o) {
  const auto r = checkpoint::ConsolidateSnapshot(o.uri, o.out_uri);
  fmt::print("consolidated {} into {} ({} tensor(s), {}, {})\n", r.source, r.saved.uri, r.tensors,
             HumanBytes(r.saved.shard.size), r.saved.shard.digest);
  return 0;
}

}  // namespace

Command AddCheckpointCommand(CLI::App& parent) {
  auto options = std::make_shared<CheckpointOptions>();
  CLI::App* app = parent.add_subcommand(
      "checkpoint",
      "List, verify, inspect or consolidate snapshots in file://, s3:// or a local path");
  app->require_subcommand(1, 1);
  CLI::App* ls = app->add_subcommand("ls", "List snapshots: step, world size, status, size");
  CLI::App* verify =
      app->add_subcommand("verify", "Recompute every shard digest; exit 1 naming any bad shard");
  CLI::App* inspect = app->add_subcommand(
      "inspect", "Show a snapshot's manifest, metadata and tensors (dtype, shape, size)");
  for (CLI::App* sub : {ls, verify, inspect}) {
    sub->add_option("uri", options->uri,
                    "a snapshot (file:///ckpt/run7/step-000000000100), a run's folder "
                    "(file:///ckpt/run7: its latest) or a folder of runs")
        ->required();
  }
  inspect->add_option("--rank", options->ranks, "only these ranks' shards (default: all)");
  app->footer(
      "A snapshot is complete when its manifest.json exists and every shard's size and digest "
      "match it.\nExit codes: 0 fine, 1 a bad snapshot or an error, 2 bad usage.");
  CLI::App* consolidate = app->add_subcommand(
      "consolidate",
      "Write a sharded snapshot as one unsharded (data-parallel, world 1) snapshot under OUT_URI");
  consolidate
      ->add_option("snapshot", options->uri, "a sharded snapshot (or a run's folder: its latest)")
      ->required();
  consolidate->add_option("out_uri", options->out_uri, "the run folder to write it to")->required();
  return {app, [ls, verify, consolidate, options] {
            if (ls->parsed()) return RunLs(*options);
            if (verify->parsed()) return RunVerify(*options);
            if (consolidate->parsed()) return RunConsolidate(*options);
            return RunInspect(*options);
          }};
}

}  // namespace cohort::launcher
