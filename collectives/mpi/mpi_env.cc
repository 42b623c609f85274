#include "collectives/mpi/mpi_env.h"

#include <fmt/format.h>
#include <mpi.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "common/check_mpi.h"
#include "common/env.h"
#include "common/heap.h"
#include "common/log.h"

namespace cohort::collectives {
namespace {

std::atomic<bool> g_stuck{false};
bool g_we_initialized = false;
bool g_thread_multiple = false;
std::vector<void (*)()> g_before_finalize;  // appended under Ensure()'s once or the op's once

const char* LevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
  }
  return "unknown";
}

// Open MPI's all-reduce allocates a message-sized temporary buffer per call (common/heap.h).
void TuneMalloc() {
  if (!env::kMallocTune.Bool(true)) return;
  if (!KeepFreedMemory()) {
    COHORT_WARN(kMpi, "mallopt failed; large MPI collectives may page-fault on every call");
  }
}

void FinalizeAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (g_stuck.load()) {
    // A worker thread is blocked in a collective that will never complete; MPI_Finalize would
    // block too. End the whole job so that mpirun (and a launcher) sees the failure.
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (!g_we_initialized) return;
  for (auto fn : g_before_finalize) fn();
  MPI_Finalize();
}

}  // namespace

bool MpiEnv::Launched() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  return initialized || env::kOmpiSize.IsSet() || std::getenv("PMIX_RANK") != nullptr;
}

void MpiEnv::Ensure() {
  static std::once_flag once;
  std::call_once(once, [] {
    int initialized = 0;
    COHORT_CHECK_MPI(MPI_Initialized(&initialized));
    int provided = MPI_THREAD_SINGLE;
    TuneMalloc();
    if (!initialized) {
      // MULTIPLE: each group (Split) runs its MPI calls on its own worker thread.
      COHORT_CHECK_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
      g_we_initialized = true;
    } else {
      COHORT_CHECK_MPI(MPI_Query_thread(&provided));
    }
    g_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
    std::atexit(FinalizeAtExit);
    if (provided < MPI_THREAD_SERIALIZED) {
      throw Unavailable(fmt::format(
          "MPI provides only {}; cohort runs MPI calls on a worker thread and needs "
          "MPI_THREAD_SERIALIZED (initialize MPI with MPI_Init_thread, or let cohort do it)",
          LevelName(provided)));
    }
  });
}

void MpiEnv::BeforeFinalize(void (*fn)()) { g_before_finalize.push_back(fn); }

void MpiEnv::MarkStuck() { g_stuck.store(true); }

bool MpiEnv::Stuck() { return g_stuck.load(); }

bool MpiEnv::ThreadMultiple() { return g_thread_multiple; }

void MpiEnv::Abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace cohort::collectives
