// Checkpoint benchmark (issue 5): save and load of a ~1 GiB training state (many tensors of mixed
// sizes and dtypes) with cohort's snapshots (HDF5 shard + manifest, file:// and optionally s3://),
// in the same run as
//   raw    a sequential write()/read() of the same bytes to one file on the same disk
//   torch  torch.save/torch.load of the same state (Debian's python3-torch, torch_side.py)
// Every save is durable before its clock stops (file and directory fsync'd, on every side), and
// starts with the scratch dir's page cache dropped and the previous rep's deletions sync()ed;
// every read starts from a dropped page cache (posix_fadvise DONTNEED) into fresh memory. All saves
// run first, then all loads, each phase alternating the sides (their order rotates every rep);
// medians of --reps. Then the async saver: how long Save() blocks given the host copy is done,
// against a synchronous save, and the host copy itself (phase one) into fresh and into pooled
// (warm) buffers.
//   build/bin/checkpoint_bench [--gib 1] [--reps 5] [--dir /tmp/cohort-ckpt-bench] [--json F]
//                              [--s3-uri s3://bucket/prefix]   (AWS_* env: endpoint, key)
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "bench/checkpoint/bench_io.h"
#include "checkpoint/async_saver.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/host_buffer_pool.h"
#include "checkpoint/loader.h"
#include "common/error.h"

namespace cohort::bench {
namespace {

using Clock = std::chrono::steady_clock;
using checkpoint::Shard;

struct Options {
  double gib = 1.0;
  int reps = 5;
  std::string dir = "/tmp/cohort-ckpt-bench";
  std::string s3_uri;
  std::string json;
  std::string python = "/usr/bin/python3";
  bool torch = true;
};

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Free page reporting (virtio-balloon) hands guest memory that stays free back to the host, which
// makes the next first touch of it slow; said in the output because it moves every side's time.
void PrintPageReporting() {
  std::ifstream f("/sys/module/page_reporting/parameters/reported_kib");
  uint64_t kib = 0;
  if (!(f >> kib)) return;
  std::printf(
      "note: this machine reports free memory to its host (virtio-balloon free page reporting, "
      "%.1f GiB so far): memory left free for ~2 s is slow to touch again (~2 s/GiB here), which "
      "is why each save starts right after its page cache is dropped\n",
      static_cast<double>(kib) / (1 << 20));
}

class Bench {
 public:
  Bench(const Options& o, Shard state) : o_(o), state_(std::move(state)) {
    bytes_ = state_.TensorBytes();
  }

  // All saves first, then all loads: each phase alternates the sides (their order rotates every
  // rep). Loads touch a GiB of fresh memory each, which disturbs the writes that follow them.
  void RunFileSides() {
    std::unique_ptr<TorchSide> torch;
    if (o_.torch) {
      const std::string spec = o_.dir + "/spec.json";
      std::ofstream(spec) << StateSpecJson(state_);
      std::printf("starting torch side (builds the same state in python)...\n");
      torch = std::make_unique<TorchSide>(o_.python, COHORT_TORCH_SIDE, spec);
    }
    auto store = std::shared_ptr<checkpoint::ObjectStore>(
        checkpoint::OpenObjectStore("file://" + o_.dir + "/cohort"));
    const checkpoint::RunDir run = checkpoint::RunDir::Of(*store, "bench");
    const std::string raw_path = o_.dir + "/raw.bin", torch_path = o_.dir + "/torch.pt";
    std::vector<std::string> sides = {"raw", "cohort"};
    if (torch) sides.push_back("torch");
    std::string snapshot;
    for (int rep = 0; rep < o_.reps; ++rep) {
      std::rotate(sides.begin(), sides.begin() + 1, sides.end());
      for (const std::string& side : sides) {
        if (side == "raw") {
          RemoveAll(raw_path);
          Settle();
          Record("save", "raw", RawWrite(raw_path, state_));
        } else if (side == "cohort") {
          RemoveAll(o_.dir + "/cohort");
          Settle();
          snapshot = CohortSave(store, "cohort", rep);
        } else {
          RemoveAll(torch_path);
          Settle();
          Record("save", "torch", torch->Run("save", torch_path));
        }
      }
      std::printf("saves: rep %d/%d done\n", rep + 1, o_.reps);
      std::fflush(stdout);
    }
    Settle();
    for (int rep = 0; rep < o_.reps; ++rep) {
      std::rotate(sides.begin(), sides.begin() + 1, sides.end());
      for (const std::string& side : sides) {
        if (side == "raw") {
          Record("load", "raw", RawRead(raw_path, /*fresh_buffer=*/true, nullptr));
          Record("load", "raw (warm buffer)", RawRead(raw_path, false, &warm_));
        } else if (side == "cohort") {
          DropCache(o_.dir + "/cohort");
          CohortLoad(run, snapshot, "cohort");
        } else {
          Record("load", "torch", torch->Run("load", torch_path));
        }
      }
      std::printf("loads: rep %d/%d done\n", rep + 1, o_.reps);
      std::fflush(stdout);
    }
    RemoveAll(raw_path);
    RemoveAll(torch_path);
    RemoveAll(o_.dir + "/cohort");
    warm_ = std::vector<char>();
  }

  void RunS3() {
    auto store = std::shared_ptr<checkpoint::ObjectStore>(checkpoint::OpenObjectStore(o_.s3_uri));
    const checkpoint::RunDir run = checkpoint::RunDir::Of(*store, "bench");
    for (int rep = 0; rep < o_.reps; ++rep) {
      Settle();
      const std::string name = CohortSave(store, "cohort s3", rep);
      CohortLoad(run, name, "cohort s3");
      checkpoint::DeleteSnapshot(run, name);
    }
  }

  // Phase one (the host copy) and phase two's stall, against a synchronous save.
  void RunAsync() {
    const std::string uri = "file://" + o_.dir + "/async";
    auto store = std::shared_ptr<checkpoint::ObjectStore>(checkpoint::OpenObjectStore(uri));
    checkpoint::CheckpointOptions co;
    co.run = "bench";
    auto ckpt = std::make_shared<checkpoint::Checkpointer>(store, co);
    checkpoint::AsyncSaver saver(ckpt);
    checkpoint::HostBufferPool pool;
    for (int rep = 0; rep < o_.reps; ++rep) {
      // Phase one into pooled buffers: warm from the second rep on (the first fills the pool).
      auto start = Clock::now();
      Shard copy = CopyState(&pool);
      if (rep > 0) Record("copy", "pooled (warm) buffers", Since(start));
      if (rep == 0) Record("copy", "fresh buffers", Since(start));
      Settle();
      start = Clock::now();
      saver.Save(rep + 1, std::move(copy));
      Record("async", "Save() stall", Since(start));
      start = Clock::now();
      saver.Wait();
      Record("async", "background write", Since(start));
      Settle();
      start = Clock::now();
      const auto sync = ckpt->Save(StateAt(100 + rep));
      Record("async", "synchronous save", Since(start));
      checkpoint::DeleteSnapshot(ckpt->run_dir(), checkpoint::SnapshotName(rep + 1));
      checkpoint::DeleteSnapshot(ckpt->run_dir(), sync.name);
    }
    saver.Finish();
    RemoveAll(o_.dir + "/async");
  }

  void Report() const;
  nlohmann::json Json() const;

 private:
  // Before every save: the page cache of every file in the scratch dir is dropped, so that each
  // side writes into memory the guest has just freed. This VM returns memory that stays free for
  // ~2 s to its host (virtio-balloon free page reporting, see PrintPageReporting), and the first
  // touch of a returned page faults on the host: measured, writing 1 GiB into the page cache took
  // 0.14 s right after a 1 GiB file was deleted and 2.1 s when 8 s had passed since. Without the
  // drop, which side found host-backed pages depended on the order of the sides (a cohort save
  // right after the raw write spent 1.1-1.9 s copying, against 0.2-0.5 s after its own previous
  // save). Deleted files are freed (and, on a file system mounted with `discard`, trimmed) by a
  // sync() now, so that the next side's fsync does not pay for the last one's deletions.
  void Settle() {
    DropCache(o_.dir);
    ::sync();
  }

  Shard StateAt(int64_t step) const {
    Shard s = state_;  // shares the bytes: immutable once saved
    s.step = step;
    return s;
  }

  Shard CopyState(checkpoint::HostBufferPool* pool) const {
    Shard copy;
    copy.step = state_.step;
    for (const auto& t : state_.tensors) {
      auto c = pool->Allocate(t.name(), t.dtype(), t.shape());
      std::memcpy(c.mutable_data(), t.data(), t.nbytes());
      copy.tensors.push_back(std::move(c));
    }
    return copy;
  }

  // A synchronous save of the state as snapshot rep + 1; returns its name.
  std::string CohortSave(const std::shared_ptr<checkpoint::ObjectStore>& store,
                         const std::string& side, int rep) {
    checkpoint::CheckpointOptions co;
    co.run = "bench";
    checkpoint::Checkpointer ckpt(store, co);
    const auto saved = ckpt.Save(StateAt(rep + 1));
    Record("save", side, saved.total_seconds);
    Record("save", side + ": encode", saved.encode_seconds);
    Record("save", side + ": digest+write+fsync", saved.write_seconds);
    return saved.name;
  }

  // Reads, verifies (digest) and decodes a snapshot.
  void CohortLoad(const checkpoint::RunDir& run, const std::string& name, const std::string& side) {
    const auto start = Clock::now();
    const auto loaded = checkpoint::LoadSnapshot(run, name);
    Record("load", side, Since(start));
    if (loaded.shards.at(0).tensors.size() != state_.tensors.size()) {
      throw Internal("loaded a different number of tensors");
    }
  }

  void Record(const std::string& op, const std::string& side, double seconds) {
    results_[op][side].push_back(seconds);
  }
  double Med(const std::string& op, const std::string& side) const {
    auto it = results_.find(op);
    if (it == results_.end() || !it->second.count(side)) return 0;
    return Median(it->second.at(side));
  }

  const Options& o_;
  Shard state_;
  uint64_t bytes_ = 0;
  std::vector<char> warm_;
  std::map<std::string, std::map<std::string, std::vector<double>>> results_;
};

void Bench::Report() const {
  const double gb = static_cast<double>(bytes_) / 1e9;
  std::printf("\n%-10s %-32s %9s %8s %8s %9s %s\n", "op", "side", "median s", "GB/s", "vs raw",
              "vs torch", "samples");
  for (const auto& [op, sides] : results_) {
    for (const auto& [side, samples] : sides) {
      const double s = Median(samples);
      const bool rate = op == "save" || op == "load" || op == "copy";
      const double raw = Med(op, "raw"), torch = Med(op, "torch");
      const bool whole = side == "cohort" || side == "cohort s3" || side == "torch";
      std::printf(
          "%-10s %-32s %9.3f %8s %8s %9s %zu\n", op.c_str(), side.c_str(), s,
          rate ? fmt::format("{:.3f}", gb / s).c_str() : "",
          whole && raw > 0 && side != "torch" ? fmt::format("{:.2f}x", raw / s).c_str() : "",
          whole && torch > 0 && side != "torch" ? fmt::format("{:.2f}x", torch / s).c_str() : "",
          samples.size());
    }
  }
  const double save = Med("save", "cohort"), stall = Med("async", "Save() stall");
  const double sync = Med("async", "synchronous save");
  std::printf("\ntargets:\n");
  std::printf("  file save >= 0.8x raw write:   %.2fx  %s\n", Med("save", "raw") / save,
              Med("save", "raw") / save >= 0.8 ? "PASS" : "FAIL");
  if (Med("save", "torch") > 0) {
    std::printf("  file save >= 1.5x torch.save:  %.2fx  %s\n", Med("save", "torch") / save,
                Med("save", "torch") / save >= 1.5 ? "PASS" : "FAIL");
  }
  std::printf("  async stall <= 10%% of a sync save: %.6f s = %.4f%% of %.3f s  %s\n", stall,
              100 * stall / sync, sync, stall <= 0.1 * sync ? "PASS" : "FAIL");
  std::printf(
      "  (phase one, the host copy the caller does before Save(): %.3f s into pooled "
      "buffers, %.3f s into fresh ones)\n",
      Med("copy", "pooled (warm) buffers"), Med("copy", "fresh buffers"));
}

nlohmann::json Bench::Json() const {
  nlohmann::json j = {{"bytes", bytes_}, {"tensors", state_.tensors.size()}, {"reps", o_.reps}};
  for (const auto& [op, sides] : results_) {
    for (const auto& [side, samples] : sides) {
      j["results"][op][side] = {{"median_s", Median(samples)}, {"samples", samples}};
    }
  }
  return j;
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"Checkpoint save/load: cohort snapshots vs raw I/O vs torch.save/torch.load"};
  app.add_option("--gib", o.gib, "state size in GiB")->capture_default_str();
  app.add_option("--reps", o.reps, "repetitions (medians are reported)")->capture_default_str();
  app.add_option("--dir", o.dir, "scratch directory on the disk under test")->capture_default_str();
  app.add_option("--s3-uri", o.s3_uri, "also save/load to this s3:// prefix (AWS_* env)");
  app.add_option("--json", o.json, "write the samples here");
  app.add_option("--python", o.python, "python with torch")->capture_default_str();
  app.add_flag("!--no-torch", o.torch, "skip the torch.save/torch.load side");
  CLI11_PARSE(app, argc, argv);

  std::filesystem::create_directories(o.dir);
  const auto start = Clock::now();
  Shard state = MakeState(static_cast<uint64_t>(o.gib * (1ull << 30)), 42);
  std::printf("state: %zu tensors, %.3f GiB (built in %.1f s)\n", state.tensors.size(),
              static_cast<double>(state.TensorBytes()) / (1ull << 30), Since(start));
  std::printf(
      "durability: every save (raw, cohort, torch) fsyncs its file(s) and directory "
      "before its clock stops; before it starts, the scratch dir's page cache is dropped and the "
      "previous rep's deletions are sync()ed\n");
  std::printf(
      "reads: page cache dropped (posix_fadvise DONTNEED) first; into fresh memory, as "
      "a resumed process has (torch side: MALLOC_MMAP_THRESHOLD_=65536); raw also into "
      "a warm buffer, for reference\n");
  PrintPageReporting();
  std::printf("dir: %s, %d reps, sides alternating\n", o.dir.c_str(), o.reps);
  std::fflush(stdout);
  Bench bench(o, std::move(state));
  bench.RunFileSides();
  if (!o.s3_uri.empty()) bench.RunS3();
  bench.RunAsync();
  bench.Report();
  if (!o.json.empty()) std::ofstream(o.json) << bench.Json().dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  try {
    return cohort::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_bench: %s\n", e.what());
    return 1;
  }
}
