#include "checkpoint/checkpointer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <future>

#include "checkpoint/layout.h"
#include "checkpoint/shard_file.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "common/utc_time.h"

namespace cohort::checkpoint {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

nlohmann::json EntryJson(const ShardEntry& e, int64_t step) {
  nlohmann::json j = {{"step", step},
                      {"object", e.object},
                      {"size", e.size},
                      {"digest", e.digest},
                      {"tensors", e.tensors}};
  if (!e.contents.is_null()) j["contents"] = e.contents;  // sharded saves (layout.h)
  return j;
}

}  // namespace

Checkpointer::Checkpointer(std::shared_ptr<ObjectStore> store, CheckpointOptions options)
    : store_(std::move(store)), options_(std::move(options)) {
  if (!store_) throw InvalidArgument("Checkpointer: no object store");
  if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size) {
    throw InvalidArgument(fmt::format("Checkpointer: rank {} is not in a world of size {}",
                                      options_.rank, options_.world_size));
  }
  if (options_.world_size > 1 && !options_.rendezvous) {
    throw InvalidArgument(fmt::format(
        "Checkpointer: a world of {} ranks needs a rendezvous store to agree on when a snapshot "
        "is complete; pass CheckpointOptions::rendezvous",
        options_.world_size));
  }
  if (options_.run.find("..") != std::string::npos) {
    throw InvalidArgument(fmt::format("run id '{}' must not contain '..'", options_.run));
  }
  if (options_.attempt < 0) options_.attempt = env::kRestart.Int(0);
  if (IsShardedLayout(options_.layout)) {
    const auto& mesh = options_.layout.at("mesh");
    const int ranks = mesh.value("dp", 1) * mesh.value("pp", 1) * mesh.value("tp", 1);
    if (ranks != options_.world_size) {
      throw InvalidArgument(
          fmt::format("Checkpointer: sharded layout mesh {} has {} ranks, the "
                      "world {}; pass the job's dp x pp x tp",
                      mesh.dump(), ranks, options_.world_size));
    }
  }
}

ShardEntry Checkpointer::WriteShard(const Shard& shard, const std::string& name,
                                    SavedSnapshot* saved) {
  const auto start = Clock::now();
  const EncodedShard encoded = EncodeShard(shard, options_.rank);
  saved->encode_seconds = SecondsSince(start);

  const auto write_start = Clock::now();
  ShardEntry entry;
  entry.rank = options_.rank;
  entry.object = ShardObjectName(options_.rank);
  entry.size = encoded.size();
  entry.tensors = shard.tensors.size();
  if (IsShardedLayout(options_.layout)) {
    // Before any byte is written: a slice that does not fit its tensor fails the save here.
    entry.contents = DescribeContents(shard, encoded, options_.digest,
                                      options_.layout.value("digest_block", kDefaultDigestBlock));
  }
  const RunDir run = run_dir();
  // The digest is computed on another core while the bytes go to the store (whose writes and
  // fsync wait on the disk or the network), so it costs no time when a core is free. The
  // future's destructor joins it on every path out.
  auto hasher = NewHasher(options_.digest);
  std::future<std::string> digest = std::async(std::launch::async, [&] {
    for (const EncodedShard::Piece& piece : encoded.pieces())
      hasher->Update(piece.data, piece.size);
    return hasher->Finish();
  });
  auto writer = store_->NewWriter(run.Key(name + "/" + entry.object));
  for (const EncodedShard::Piece& piece : encoded.pieces()) writer->Write(piece.data, piece.size);
  writer->Commit();
  entry.digest = digest.get();
  saved->write_seconds = SecondsSince(write_start);
  COHORT_DEBUG(kCheckpoint, "wrote {} ({} bytes, {}) in {:.3f} s",
               run.Uri(name + "/" + entry.object), entry.size, entry.digest, saved->write_seconds);
  return entry;
}

std::vector<ShardEntry> Checkpointer::GatherEntries(const std::string& scope, int64_t step,
                                                    ShardEntry own) {
  collectives::Store& rdzv = *options_.rendezvous;
  std::vector<std::string> keys;
  for (int r = 1; r < options_.world_size; ++r) keys.push_back(fmt::format("{}/rank-{}", scope, r));
  try {
    AwaitKeys(keys, options_.timeout, step);
  } catch (const Timeout&) {
    std::vector<int> missing;
    for (int r = 1; r < options_.world_size; ++r) {
      if (rdzv.List(keys[r - 1]).count(keys[r - 1]) == 0) missing.push_back(r);
    }
    throw Timeout(fmt::format(
        "snapshot step {}: rank(s) {} did not report their shard within {} s; the snapshot is "
        "left incomplete",
        step, fmt::join(missing, ", "), options_.timeout.count() / 1000.0));
  }
  std::vector<ShardEntry> entries{std::move(own)};
  std::vector<std::string> failures;
  for (int r = 1; r < options_.world_size; ++r) {
    const std::string value = rdzv.Get(keys[r - 1], std::chrono::milliseconds(0));
    rdzv.Delete(keys[r - 1]);
    const auto j = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      failures.push_back(fmt::format("rank {} reported '{}'", r, value.substr(0, 100)));
    } else if (j.contains("error")) {
      failures.push_back(fmt::format("rank {}: {}", r, j["error"].get<std::string>()));
    } else if (j.value("step", int64_t{-1}) != step) {
      failures.push_back(fmt::format("rank {} saved step {} while rank 0 saved step {}", r,
                                     j.value("step", int64_t{-1}), step));
    } else {
      ShardEntry e;
      e.rank = r;
      e.object = j.at("object").get<std::string>();
      e.size = j.at("size").get<uint64_t>();
      e.digest = j.at("digest").get<std::string>();
      e.tensors = j.value("tensors", uint64_t{0});
      if (j.contains("contents")) e.contents = j.at("contents");
      entries.push_back(std::move(e));
    }
  }
  if (!failures.empty()) {
    throw PeerFailure(
        fmt::format("snapshot step {} is left incomplete: {}", step, fmt::join(failures, "; ")));
  }
  return entries;
}

void Checkpointer::FinishSnapshot(const Shard& shard, const std::string& name,
                                  std::vector<ShardEntry> entries) {
  const RunDir run = run_dir();
  Manifest m;
  m.run = options_.run;
  m.step = shard.step;
  m.epoch = shard.epoch;
  m.world_size = options_.world_size;
  m.layout = options_.layout;
  m.created = UtcNowRfc3339();
  m.shards = std::move(entries);
  if (IsShardedLayout(m.layout)) FinalizeShardedManifest(m);
  // The manifest is what makes the snapshot exist: written only now, after every shard.
  store_->Put(run.Key(name + "/" + kManifestName), m.ToJson());
  store_->Put(run.Key(kLatestName), name + "\n");
  try {
    const auto deleted = ApplyRetention(run, name, options_.keep);
    if (!deleted.empty()) {
      COHORT_INFO(kCheckpoint, "retention (keep {}): deleted {}", options_.keep,
                  fmt::join(deleted, ", "));
    }
  } catch (const Error& e) {
    // The new snapshot is complete; failing to delete old ones must not fail the save.
    COHORT_WARN(kCheckpoint, "retention in {} failed (old snapshots kept): {}", run.Uri(),
                e.what());
  }
}

void Checkpointer::AwaitKeys(const std::vector<std::string>& keys,
                             std::chrono::milliseconds timeout, int64_t step) {
  // 5 store calls a second per waiting rank while a save is in flight: little next to a
  // snapshot's uploads, and a failed rank lets go of a dead peer's shard within 0.2 s.
  // Once cancelled, one look without waiting: keys already there (every peer reported) still
  // let the save complete.
  constexpr std::chrono::milliseconds kSlice(200);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const bool cancelled = cancelled_;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    try {
      options_.rendezvous->Wait(
          keys, cancelled ? std::chrono::milliseconds(0)
                          : std::clamp(left, std::chrono::milliseconds(0), kSlice));
      return;
    } catch (const Timeout&) {
      if (cancelled) {
        throw PeerFailure(fmt::format(
            "snapshot step {} abandoned: training on rank {} stopped while it waited for the "
            "other ranks",
            step, options_.rank));
      }
      if (Clock::now() >= deadline) throw;
    }
  }
}

SavedSnapshot Checkpointer::Save(const Shard& shard) {
  if (cancelled_) {
    throw PeerFailure(fmt::format("snapshot step {} not saved: this rank's saves were cancelled",
                                  shard.step));
  }
  const auto start = Clock::now();
  SavedSnapshot saved;
  saved.step = shard.step;
  saved.name = SnapshotName(shard.step);
  saved.uri = run_dir().Uri(saved.name);
  const bool multi = options_.world_size > 1;
  const std::string scope =
      fmt::format("checkpoint/{}/attempt-{}/save-{}", options_.run, options_.attempt, seq_);
  const std::string done_key = scope + "/done";
  ++seq_;

  if (options_.rank != 0) {
    collectives::Store& rdzv = *options_.rendezvous;
    const std::string own_key = fmt::format("{}/rank-{}", scope, options_.rank);
    try {
      saved.shard = WriteShard(shard, saved.name, &saved);
    } catch (const std::exception& e) {
      rdzv.Set(own_key, nlohmann::json{{"step", shard.step}, {"error", e.what()}}.dump());
      throw;
    }
    rdzv.Set(own_key, EntryJson(saved.shard, shard.step).dump());
    const auto wait = options_.timeout + std::chrono::minutes(1);
    try {
      AwaitKeys({done_key}, wait, shard.step);
    } catch (const Timeout&) {
      throw Timeout(fmt::format("snapshot step {}: rank 0 did not complete {} within {} s",
                                shard.step, saved.uri, wait.count() / 1000.0));
    }
    const std::string done = rdzv.Get(done_key, std::chrono::milliseconds(0));
    if (done != "ok")
      throw PeerFailure(fmt::format("rank 0 did not complete {}: {}", saved.uri, done));
    saved.total_seconds = SecondsSince(start);
    return saved;
  }

  try {
    ShardEntry own = WriteShard(shard, saved.name, &saved);
    saved.shard = own;
    std::vector<ShardEntry> entries{own};
    if (multi) {
      entries = GatherEntries(scope, shard.step, std::move(own));
      // Every rank has returned from the previous save by now: its done key can go.
      if (seq_ > 1) {
        options_.rendezvous->Delete(fmt::format("checkpoint/{}/attempt-{}/save-{}/done",
                                                options_.run, options_.attempt, seq_ - 2));
      }
    }
    FinishSnapshot(shard, saved.name, std::move(entries));
  } catch (const std::exception& e) {
    if (multi) options_.rendezvous->Set(done_key, std::string("error: ") + e.what());
    throw;
  }
  if (multi) options_.rendezvous->Set(done_key, "ok");
  saved.total_seconds = SecondsSince(start);
  COHORT_INFO(kCheckpoint, "snapshot {} complete ({} rank(s), {:.2f} s)", saved.uri,
              options_.world_size, saved.total_seconds);
  return saved;
}

}  // namespace cohort::checkpoint
