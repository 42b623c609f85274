// Each rank all-reduces {rank + 1, 10} and prints the sums: "rank R of N: 3 20" at world 2.
#include <cstdio>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/registry.h"
#include "collectives/store/store_from_env.h"
#include "common/world.h"

int main() {
  using namespace cohort::collectives;
  const cohort::World world = cohort::DetectWorld();
  auto store = world.size > 1 ? ConnectStoreFromEnv() : nullptr;
  auto comm = CreateCommunicator("gloo", CommConfig::FromEnv(world.rank, world.size, store));
  std::vector<float> x = {static_cast<float>(world.rank + 1), 10.0f};
  comm->AllReduce(TensorView(x.data(), x.size(), DType::kFloat32), ReduceOp::kSum)->Wait();
  std::printf("rank %d of %d: %g %g\n", comm->Rank(), comm->Size(), x[0], x[1]);
  return 0;
}
