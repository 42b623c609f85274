// Saving a snapshot from every rank of a job. Each rank writes its own shard; rank 0 waits (on
// the rendezvous store) until every shard landed, then writes manifest.json, then `latest`, then
// applies retention. Torch-free: the caller hands in host copies (checkpoint/shard.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "checkpoint/catalog.h"
#include "checkpoint/digest.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"
#include "checkpoint/store/object_store.h"
#include "collectives/store/store.h"

namespace cohort::checkpoint {

struct CheckpointOptions {
  // The job's id (COHORT_RUN_ID): snapshots go to <store>/<run>/step-<N>/. Empty: the store's
  // root is the run's folder.
  std::string run;
  int rank = 0;
  int world_size = 1;
  nlohmann::json layout = {{"kind", "data_parallel"}};
  DigestAlgorithm digest = DigestAlgorithm::kXxh3_128;
  // Complete snapshots to keep (the newest K); 0 keeps all.
  int keep = 0;
  // Ranks report their shards here; required when world_size > 1. Keys live under
  // "checkpoint/<run>/attempt-<A>/save-<i>/", so that restarts never read a dead attempt's keys.
  std::shared_ptr<collectives::Store> rendezvous;
  // The restart attempt; -1 reads COHORT_RESTART (0 when unset).
  int64_t attempt = -1;
  // How long rank 0 waits for the other shards (the others wait this plus a minute for rank 0).
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
};

struct SavedSnapshot {
  std::string name;  // "step-000000000100"
  std::string uri;   // of the snapshot's folder
  int64_t step = 0;
  ShardEntry shard;  // this rank's shard as the manifest lists it
  double encode_seconds = 0;
  double write_seconds = 0;  // digest + upload of this rank's shard
  double total_seconds = 0;  // until the snapshot was complete (manifest and `latest` written)
};

// One per rank. Save() is collective: every rank calls it for the same steps in the same order.
class Checkpointer {
 public:
  // Throws InvalidArgument for a bad rank/world size, or world_size > 1 without a rendezvous.
  Checkpointer(std::shared_ptr<ObjectStore> store, CheckpointOptions options);

  // Writes shard (its step names the snapshot) and returns once the snapshot is complete on
  // every rank. Throws what the store throws, PeerFailure when another rank failed (naming it),
  // Timeout when a rank never reported. Not thread-safe: one save at a time.
  SavedSnapshot Save(const Shard& shard);
  // Makes a Save() that waits for other ranks (rank 0 for their shards, the others for rank 0's
  // manifest) stop waiting within ~0.2 s: what is there already still completes the snapshot,
  // what is missing makes it throw PeerFailure. Every later Save() throws at once. For a rank
  // whose training failed: its save in flight may wait for a peer that died, and would hold the
  // process for up to `timeout` (the launcher's restart waited out its grace period for it).
  // Thread-safe; the only call that may come from another thread.
  void Cancel() { cancelled_ = true; }

  const CheckpointOptions& options() const { return options_; }
  ObjectStore& store() { return *store_; }
  RunDir run_dir() const { return RunDir::Of(*store_, options_.run); }

 private:
  // Encodes, digests and uploads this rank's shard.
  ShardEntry WriteShard(const Shard& shard, const std::string& name, SavedSnapshot* saved);
  // Rank 0: collects every rank's entry, or throws naming the ranks that failed or are missing.
  std::vector<ShardEntry> GatherEntries(const std::string& scope, int64_t step, ShardEntry own);
  void FinishSnapshot(const Shard& shard, const std::string& name, std::vector<ShardEntry> entries);
  // Store::Wait for keys, in slices short enough that Cancel() ends it. Throws Timeout after
  // `timeout`, PeerFailure once cancelled.
  void AwaitKeys(const std::vector<std::string>& keys, std::chrono::milliseconds timeout,
                 int64_t step);

  std::shared_ptr<ObjectStore> store_;
  CheckpointOptions options_;
  int64_t seq_ = 0;  // saves so far in this process: the rendezvous scope of the next one
  std::atomic<bool> cancelled_{false};
};

}  // namespace cohort::checkpoint
