// The victim of the crash-safety test: resumes from the latest snapshot in DIR (checking that it
// holds exactly what was saved for its step; exit 3 if not), then saves snapshots of a 2-rank
// job (ranks as threads) in a loop until killed. Prints "resumed <step>" and "saved <step>".
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/async_saver.h"
#include "checkpoint/loader.h"
#include "collectives/store/memory_store.h"
#include "tests/checkpoint/crash_shard.h"

using namespace cohort;
using namespace cohort::checkpoint;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [KIB_PER_RANK]\n", argv[0]);
    return 2;
  }
  const std::string uri = std::string("file://") + argv[1];
  const size_t kib = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 4096;
  constexpr int kWorld = 2;
  try {
    auto store = std::shared_ptr<ObjectStore>(OpenObjectStore(uri));
    const RunDir run = RunDir::Of(*store, "crash");
    int64_t step = 0;
    if (auto loaded = LoadLatest(run)) {
      step = loaded->manifest.step;
      for (int r = 0; r < kWorld; ++r) {
        const std::string diff = testing::CompareCrashShard(loaded->shards.at(r), step, r, kib);
        if (!diff.empty()) {
          std::printf("MISMATCH in %s rank %d: %s\n", loaded->uri.c_str(), r, diff.c_str());
          return 3;
        }
      }
    }
    std::printf("resumed %lld\n", static_cast<long long>(step));
    std::fflush(stdout);
    auto rdzv = std::make_shared<collectives::MemoryStore>();
    std::vector<std::thread> ranks;
    for (int r = 0; r < kWorld; ++r) {
      ranks.emplace_back([&, r] {
        CheckpointOptions o;
        o.run = "crash";
        o.rank = r;
        o.world_size = kWorld;
        o.rendezvous = rdzv;
        o.keep = 3;
        AsyncSaver saver(std::make_shared<Checkpointer>(store, o));
        for (int64_t s = step + 1;; ++s) {
          saver.Save(s, testing::MakeCrashShard(s, r, kib));
          saver.Wait();
          if (r == 0) {
            std::printf("saved %lld\n", static_cast<long long>(s));
            std::fflush(stdout);
          }
        }
      });
    }
    for (auto& t : ranks) t.join();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
