// The trivial worker of bench/launch_bench.py (issue 3's launcher benchmark), the counterpart
// of bench/torch_trivial_worker.py: find the world and the store from the env contract, create a
// Gloo communicator, pass one barrier, then print `connected <rank> <CLOCK_REALTIME ns>` and
// exit 0. Started by `cohort launch -- build/bin/launch_bench_worker` or by the harness itself.
#include <time.h>

#include <cstdio>
#include <exception>

#include "collectives/registry.h"
#include "collectives/store/store_from_env.h"
#include "common/world.h"

int main() {
  using namespace cohort::collectives;
  try {
    const cohort::World world = cohort::DetectWorld();
    auto store = ConnectStoreFromEnv();
    auto comm = CreateCommunicator("gloo", CommConfig::FromEnv(world.rank, world.size, store));
    comm->Barrier()->Wait();
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    std::printf("connected %d %lld\n", world.rank,
                static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec);
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "launch_bench_worker: %s\n", e.what());
    return 1;
  }
}
