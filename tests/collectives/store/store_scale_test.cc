// Rendezvous of many simulated workers (threads) against one store: each does O(1) operations
// (Set its address, Add the arrival counter, the last one Sets "go", everyone Gets "go").
// The time is printed for the later benchmark; the bound here only catches a broken store.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "collectives/store/grpc_store_client.h"
#include "collectives/store/grpc_store_server.h"
#include "collectives/store/memory_store.h"
#include "tests/collectives/store/store_test_util.h"

namespace cohort::collectives {
namespace {

using std::chrono::milliseconds;
using testing::Clock;
using testing::MillisSince;

// Runs kWorkers threads; make_store(rank) gives each worker its own handle. Returns ms taken
// from the common start until the last worker saw "go"; fails the test on any worker error.
template <typename MakeStore>
int64_t Rendezvous(int workers, MakeStore make_store) {
  std::mutex mu;
  std::condition_variable cv;
  int created = 0;
  bool start = false;
  std::atomic<int> joined{0};
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  threads.reserve(workers);
  for (int rank = 0; rank < workers; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        std::shared_ptr<Store> store = make_store(rank);
        {
          std::unique_lock<std::mutex> lock(mu);
          ++created;
          cv.notify_all();
          cv.wait(lock, [&] { return start; });
        }
        store->Set("addr/" + std::to_string(rank), "10.0.0." + std::to_string(rank % 250));
        if (store->Add("arrived", 1) == workers) store->Set("go", "1");
        if (store->Get("go", milliseconds(10000)) == "1") joined++;
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        errors.push_back(e.what());
      }
    });
  }
  Clock::time_point t0;
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return created + static_cast<int>(errors.size()) == workers; });
    start = true;
    t0 = Clock::now();
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  const int64_t ms = MillisSince(t0);
  EXPECT_TRUE(errors.empty()) << errors.size() << " workers failed; first: " << errors.front();
  EXPECT_EQ(joined.load(), workers);
  return ms;
}

TEST(StoreScaleTest, RendezvousOf512SimulatedWorkersAgainstOneGrpcStore) {
  constexpr int kWorkers = 512;
  GrpcStoreServer server("127.0.0.1", 0, "tok");
  server.Start();
  const std::string address = server.Address();
  const int64_t ms = Rendezvous(kWorkers, [&](int) {
    auto c = std::make_shared<GrpcStoreClient>(address, "tok", milliseconds(10000));
    c->Connect();
    return c;
  });
  std::printf(
      "[ store ] rendezvous of %d workers (threads, one gRPC client each) against one "
      "store: %lld ms\n",
      kWorkers, static_cast<long long>(ms));
  EXPECT_LT(ms, 10000);
  EXPECT_EQ(server.table()->List("addr/").size(), static_cast<size_t>(kWorkers));
  EXPECT_EQ(server.table()->Get("arrived"), std::to_string(kWorkers));
  EXPECT_EQ(server.table()->NumWatches(), 0u);
}

TEST(StoreScaleTest, RendezvousOf512ThreadsOverAMemoryStore) {
  constexpr int kWorkers = 512;
  auto store = std::make_shared<MemoryStore>();
  const int64_t ms = Rendezvous(kWorkers, [&](int) { return store; });
  std::printf("[ store ] rendezvous of %d workers (threads) over a MemoryStore: %lld ms\n",
              kWorkers, static_cast<long long>(ms));
  EXPECT_LT(ms, 10000);
  EXPECT_EQ(store->List("addr/").size(), static_cast<size_t>(kWorkers));
}

}  // namespace
}  // namespace cohort::collectives
