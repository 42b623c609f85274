// One rank of a real multi-process world for the group tests (split_test.cc), on gloo or mpi.
// Modes:
//   groups  Split with colors that leave ranks out and keys that reverse the order, all-reduces
//           on two groups at once, a 2 x 2 mesh when the world has 4 ranks, batched send/recv
//           in both directions at once; every value is checked
//   hang    in the group of odd global ranks, group rank 0 never calls the all-reduce: the
//           others must time out with an error naming the group and both numberings
// --no-p2p leaves out the batched send/recv (for ps, which has none).
// Exit codes: 0 all checks passed, 1 a value was wrong, 3 an operation threw (message on stderr).
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <numeric>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/mesh.h"
#include "collectives/registry.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/log.h"
#include "common/world.h"

namespace cohort::testing {
namespace {

using namespace collectives;

int g_failures = 0;

void Expect(bool ok, const std::string& what) {
  if (!ok) {
    ++g_failures;
    fmt::print(stderr, "CHECK FAILED: {}\n", what);
  }
}

// Sum over the group of each member's global rank, all-reduced in the group, as int64.
int64_t SumOfGlobalRanks(Communicator& g) {
  int64_t v = g.GlobalRank(g.Rank());
  g.AllReduce(TensorView(&v, 1, DType::kInt64), ReduceOp::kSum)->Wait();
  return v;
}

// Colors rank % 2, keys reversed: members of a color ordered by descending global rank.
void CheckParity(Communicator& world) {
  const int r = world.Rank(), n = world.Size();
  auto g = world.Split(r % 2, -r, fmt::format("parity-{}", r % 2));
  std::vector<int> members;
  for (int q = n - 1; q >= 0; --q) {
    if (q % 2 == r % 2) members.push_back(q);
  }
  Expect(g != nullptr, "parity group exists");
  if (!g) return;
  Expect(g->Size() == static_cast<int>(members.size()),
         fmt::format("parity group size {} == {}", g->Size(), members.size()));
  for (int i = 0; i < g->Size(); ++i) {
    Expect(g->GlobalRank(i) == members[i], fmt::format("parity group rank {} is global {} (got {})",
                                                       i, members[i], g->GlobalRank(i)));
  }
  Expect(g->GlobalRank(g->Rank()) == r, "own global rank");
  const int64_t want = std::accumulate(members.begin(), members.end(), int64_t{0});
  Expect(SumOfGlobalRanks(*g) == want, "parity group all-reduce");
  Expect(g->RankName(0).find("of group parity-") != std::string::npos, g->RankName(0));
}

// Rank 0 joins no group; the rest form one group of n - 1.
void CheckLeftOut(Communicator& world) {
  const int r = world.Rank(), n = world.Size();
  auto g = world.Split(r == 0 ? Communicator::kNoColor : 7, r, "rest");
  if (r == 0) {
    Expect(g == nullptr, "kNoColor gives no communicator");
    return;
  }
  Expect(g && g->Size() == n - 1 && g->Rank() == r - 1, "rest group shape");
  if (g) Expect(SumOfGlobalRanks(*g) == int64_t{n} * (n - 1) / 2, "rest group all-reduce");
}

// Two groups (r % 2 and r / 2) with all-reduces in flight on both before either is waited for.
void CheckTwoAtOnce(Communicator& world) {
  const int r = world.Rank();
  auto a = world.Split(r % 2, r, "a");
  auto b = world.Split(r / 2, r, "b");
  std::vector<float> va(1031, 1.0f), vb(4099, 2.0f);
  auto wa = a->AllReduce(TensorView(va.data(), va.size(), DType::kFloat32), ReduceOp::kSum);
  auto wb = b->AllReduce(TensorView(vb.data(), vb.size(), DType::kFloat32), ReduceOp::kSum);
  wb->Wait();
  wa->Wait();
  Expect(va.front() == a->Size() && va.back() == a->Size(), "group a sum");
  Expect(vb.front() == 2.0f * b->Size() && vb.back() == 2.0f * b->Size(), "group b sum");
  // The world is still usable and in step after its groups were used.
  int64_t one = 1;
  world.AllReduce(TensorView(&one, 1, DType::kInt64), ReduceOp::kSum)->Wait();
  Expect(one == world.Size(), "world all-reduce after groups");
}

void CheckMesh(Communicator& world) {
  if (world.Size() != 4) return;
  auto mesh = Mesh::Create(world, MeshShape::Parse("dp=2,tp=2"));
  const int r = world.Rank();
  Expect(mesh->Coord("dp") == r / 2 && mesh->Coord("tp") == r % 2, "mesh coordinates");
  Communicator& tp = mesh->Group("tp");
  Communicator& dp = mesh->Group("dp");
  Expect(tp.Group() == fmt::format("tp-{}", r / 2), "tp group name " + tp.Group());
  Expect(dp.Group() == fmt::format("dp-{}", r % 2), "dp group name " + dp.Group());
  Expect(SumOfGlobalRanks(tp) == (r / 2) * 4 + 1, "tp group = neighbours");
  Expect(SumOfGlobalRanks(dp) == (r % 2) * 2 + 2, "dp group = stride 2");
}

// Every rank sends 1 MiB + 3 floats to both neighbours and receives from both, in one batch:
// with n == 2 both neighbours are the same rank, sending to each other at once, tags apart.
void CheckBatch(Communicator& world) {
  const int r = world.Rank(), n = world.Size();
  if (n == 1) return;
  const int right = (r + 1) % n, left = (r + n - 1) % n;
  const size_t count = (1 << 18) + 3;
  std::vector<float> to_right(count, r + 0.5f), to_left(count, r + 0.25f);
  std::vector<float> from_left(count, -1), from_right(count, -1);
  std::vector<P2POp> ops = {
      {OpType::kSend, TensorView(to_right.data(), count, DType::kFloat32), right, 1},
      {OpType::kSend, TensorView(to_left.data(), count, DType::kFloat32), left, 2},
      {OpType::kRecv, TensorView(from_left.data(), count, DType::kFloat32), left, 1},
      {OpType::kRecv, TensorView(from_right.data(), count, DType::kFloat32), right, 2}};
  for (auto& w : world.BatchSendRecv(ops)) w->Wait();
  Expect(from_left.back() == left + 0.5f, "batch: from the left neighbour");
  Expect(from_right.back() == right + 0.25f, "batch: from the right neighbour");
}

int RunGroups(Communicator& world, bool p2p) {
  CheckParity(world);
  CheckLeftOut(world);
  if (world.Size() >= 2) CheckTwoAtOnce(world);
  CheckMesh(world);
  if (p2p) CheckBatch(world);
  fmt::print("rank {} of {} ({}): groups {}\n", world.Rank(), world.Size(), world.Backend(),
             g_failures ? "FAILED" : "ok");
  return g_failures ? 1 : 0;
}

int RunHang(Communicator& world) {
  const int r = world.Rank();
  auto g = world.Split(r % 2, r, fmt::format("odd-{}", r % 2));
  if (r % 2 == 1 && g->Rank() == 0) {
    std::this_thread::sleep_for(std::chrono::seconds(8));  // never joins the all-reduce
    return 0;
  }
  int64_t v = 1;
  g->AllReduce(TensorView(&v, 1, DType::kInt64), ReduceOp::kSum)->Wait();
  return 0;
}

int Main(int argc, char** argv) {
  std::string backend = "gloo", mode = "groups";
  bool no_p2p = false;
  CLI::App app{"cohort group test worker"};
  app.add_flag("--no-p2p", no_p2p, "leave out the batched send/recv");
  app.add_option("--backend", backend);
  app.add_option("--mode", mode)->check(CLI::IsMember({"groups", "hang"}));
  CLI11_PARSE(app, argc, argv);
  const World world = DetectWorld();
  log::SetRank(world.rank);
  std::shared_ptr<Store> store;
  if (env::kStore.IsSet() || env::kMasterAddr.IsSet()) store = ConnectStoreFromEnv();
  auto comm = CreateCommunicator(backend, CommConfig::FromEnv(world.rank, world.size, store));
  return mode == "groups" ? RunGroups(*comm, !no_p2p) : RunHang(*comm);
}

}  // namespace
}  // namespace cohort::testing

int main(int argc, char** argv) {
  try {
    return cohort::testing::Main(argc, argv);
  } catch (const cohort::Error& e) {
    fmt::print(stderr, "ERROR [{}] {}\n", cohort::ErrorKindName(e.kind()), e.what());
    return 3;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ERROR [exception] {}\n", e.what());
    return 3;
  }
}
