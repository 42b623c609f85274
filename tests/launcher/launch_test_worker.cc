// A worker for `cohort launch` tests. It reads the env contract, joins the group, and then:
//   ok     all-reduces its rank and checks the sum; prints "rank R of W ok restart N"
//   crash  like ok, but rank --victim SIGKILLs itself mid-run on restarts < --until
//   exit   rank --victim exits with --code (every attempt, after joining)
//   hang   heartbeats every 100 ms; rank --victim stops heartbeating on restarts < --until
//   sleep  sleeps until SIGTERM, then prints "rank R got SIGTERM" and exits 0 (or ignores it
//          with --ignore-term)
//   print  prints --lines lines to stdout and stderr, the last without a newline
//   env    prints its COHORT_* and torchrun variables
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "collectives/communicator.h"
#include "collectives/heartbeat.h"
#include "collectives/registry.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/log.h"
#include "common/world.h"

namespace {

using namespace cohort;
using namespace cohort::collectives;

std::atomic<bool> g_term{false};

int Main(int argc, char** argv) {
  std::string mode = "ok", backend = "auto";
  int victim = -1, until = 1, code = 7, lines = 3;
  bool ignore_term = false;
  CLI::App app{"cohort launch test worker"};
  app.add_option("--mode", mode);
  app.add_option("--backend", backend);
  app.add_option("--victim", victim);
  app.add_option("--until", until);
  app.add_option("--code", code);
  app.add_option("--lines", lines);
  app.add_flag("--ignore-term", ignore_term);
  CLI11_PARSE(app, argc, argv);

  const World world = DetectWorld();
  log::SetRank(world.rank);
  const int restart = static_cast<int>(env::kRestart.Int(0));
  const bool is_victim = world.rank == victim;

  if (mode == "print") {
    for (int i = 0; i < lines; ++i) {
      std::printf("out %d of rank %d\n", i, world.rank);
      std::fprintf(stderr, "err %d of rank %d\n", i, world.rank);
    }
    std::printf("no newline at the end");
    return 0;
  }
  if (mode == "env") {
    for (const char* v : {"COHORT_RANK", "COHORT_WORLD_SIZE", "COHORT_LOCAL_RANK",
                          "COHORT_NODE_RANK", "COHORT_NNODES", "COHORT_RESTART", "COHORT_RUN_ID",
                          "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) {
      const char* val = std::getenv(v);
      std::printf("%s=%s\n", v, val ? val : "");
    }
    return 0;
  }
  if (mode == "sleep") {
    if (ignore_term) {
      ::signal(SIGTERM, SIG_IGN);
    } else {
      ::signal(SIGTERM, [](int) { g_term = true; });
    }
    std::printf("rank %d sleeping\n", world.rank);
    std::fflush(stdout);
    for (int i = 0; i < 6000 && !g_term; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (g_term) std::printf("rank %d got SIGTERM\n", world.rank);
    return 0;
  }

  auto store = ConnectStoreFromEnv();
  auto comm = CreateCommunicator(backend, CommConfig::FromEnv(world.rank, world.size, store));
  if (mode == "hang") {
    auto beat = Heartbeat::FromEnv(store);
    for (int i = 0; i < 30; ++i) {
      if (is_victim && restart < until && i == 5) {
        std::printf("rank %d stops heartbeating\n", world.rank);
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::minutes(5));
      }
      beat->Beat();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (mode == "exit") comm->Barrier()->Wait();  // every rank, so the victim leaves a full group
  if (mode == "exit" && is_victim) {
    std::fprintf(stderr, "rank %d exits with code %d\n", world.rank, code);
    return code;
  }
  for (int step = 0; step < 20; ++step) {
    if (mode == "crash" && is_victim && restart < until && step == 10) {
      std::printf("rank %d kills itself at step %d\n", world.rank, step);
      std::fflush(stdout);
      ::kill(::getpid(), SIGKILL);
    }
    int64_t x = world.rank;
    comm->AllReduce(TensorView(&x, 1, DType::kInt64), ReduceOp::kSum)->Wait();
    const int64_t want = int64_t{world.size} * (world.size - 1) / 2;
    if (x != want) {
      std::fprintf(stderr, "rank %d: sum %lld, want %lld\n", world.rank, static_cast<long long>(x),
                   static_cast<long long>(want));
      return 1;
    }
    if (mode == "crash") std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("rank %d of %d ok restart %d backend %s\n", world.rank, world.size, restart,
              comm->Backend());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ERROR %s\n", e.what());
    return 3;
  }
}
