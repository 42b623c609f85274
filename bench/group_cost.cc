// group_cost: what groups cost a process. Each rank builds the job's communicator, measures its
// threads, file descriptors, sockets and mapped shared memory, then builds a mesh (default
// dp=2,pp=2,tp=2: one group per dimension), measures again, and rank 0 prints the table of every
// rank's numbers (read from /proc/self). Run under the launcher or mpirun:
//   build/bin/cohort launch --nproc-per-node 8 -- build/bin/group_cost [--mesh dp=2,pp=2,tp=2]
#include <dirent.h>
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "collectives/mesh.h"
#include "collectives/registry.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/world.h"

namespace {

using namespace cohort::collectives;

struct Cost {
  int64_t threads = 0;
  int64_t fds = 0;
  int64_t sockets = 0;
  int64_t shm_bytes = 0;  // mappings of /dev/shm files
};

int64_t CountDir(const char* path) {
  int64_t n = 0;
  if (DIR* d = opendir(path)) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

Cost Measure() {
  Cost c;
  c.threads = CountDir("/proc/self/task");
  c.fds = CountDir("/proc/self/fd");
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      char target[256] = {0};
      const std::string link = std::string("/proc/self/fd/") + e->d_name;
      if (readlink(link.c_str(), target, sizeof(target) - 1) > 0 &&
          std::string(target).rfind("socket:", 0) == 0) {
        ++c.sockets;
      }
    }
    closedir(d);
  }
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/dev/shm/") == std::string::npos) continue;
    uint64_t lo = 0, hi = 0;
    char dash;
    std::istringstream in(line);
    in >> std::hex >> lo >> dash >> hi;
    c.shm_bytes += static_cast<int64_t>(hi - lo);
  }
  return c;
}

std::vector<Cost> GatherCosts(Communicator& world, Cost mine) {
  std::vector<Cost> all(static_cast<size_t>(world.Size()));
  world
      .AllGather(TensorView(&mine, sizeof(Cost) / 8, DType::kInt64),
                 TensorView(all.data(), all.size() * sizeof(Cost) / 8, DType::kInt64))
      ->Wait();
  return all;
}

void PrintRow(const char* what, int rank, const Cost& c) {
  fmt::print("{:>14} {:>5} {:>8} {:>6} {:>8} {:>12}\n", what, rank, c.threads, c.fds, c.sockets,
             c.shm_bytes);
}

}  // namespace

int main(int argc, char** argv) {
  std::string mesh_text = "dp=2,pp=2,tp=2";
  std::string backend = "auto";
  CLI::App app{"what a mesh of groups costs each process"};
  app.add_option("--mesh", mesh_text, "mesh shape");
  app.add_option("--backend", backend, "gloo, mpi or auto");
  CLI11_PARSE(app, argc, argv);
  try {
    const cohort::World w = cohort::DetectWorld();
    auto store = ConnectStoreFromEnv();
    auto world = CreateCommunicator(backend, CommConfig::FromEnv(w.rank, w.size, store));
    const Cost before = Measure();
    auto mesh = Mesh::Create(*world, MeshShape::Parse(mesh_text));
    const Cost after = Measure();
    auto b = GatherCosts(*world, before);
    auto a = GatherCosts(*world, after);
    if (w.rank == 0) {
      fmt::print("group cost per process: backend {}, {} ranks, mesh {}\n", world->Backend(),
                 w.size, mesh_text);
      fmt::print("{:>14} {:>5} {:>8} {:>6} {:>8} {:>12}\n", "", "rank", "threads", "fds", "sockets",
                 "shm bytes");
      for (int r = 0; r < w.size; ++r) {
        PrintRow("world only", r, b[r]);
        PrintRow("world + mesh", r, a[r]);
      }
    }
    world->Barrier()->Wait();
  } catch (const std::exception& e) {
    fmt::print(stderr, "group_cost: {}\n", e.what());
    return 1;
  }
  return 0;
}
