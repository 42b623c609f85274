// Pieces of rendezvous_bench: the per-run sample, clocks, and the variant whose simulated
// workers are real processes (this binary started again in worker mode, talking through pipes).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "collectives/store/grpc_store_client.h"
#include "collectives/store/store.h"

namespace cohort::bench {

struct Sample {
  double ms = 0;             // start signal -> the last worker returned from JoinGroup
  int conns = 0;             // established TCP connections to the store once all joined
  double cpu_ms = -1;        // CPU of everything involved during the join (store + workers)
  double store_cpu_ms = -1;  // procs: the store's process alone
};

// CLOCK_MONOTONIC in ns: one clock for every process of this machine.
int64_t NowNs();
// CPU time of clock (e.g. CLOCK_PROCESS_CPUTIME_ID) in ms.
double CpuMs(clockid_t clock);
// Established TCP connections whose remote port is `port` (the client ends, seen from here).
int CountConnections(int port);
// A connected client; warm: it has also made one call (first-call costs such as lazy symbol
// binding are paid).
std::unique_ptr<collectives::GrpcStoreClient> ConnectClient(const std::string& addr,
                                                            const std::string& token, bool warm);

struct ProcRun {
  std::string addr;  // of the store; the token travels in COHORT_TOKEN
  int port = 0;
  std::string scope;
  int n = 0;
  bool cold = false;
  double timeout_s = 60;
  double hold_s = 0;  // pause between "all ready" and the signal (to attach a profiler)
};

// Starts n worker processes, waits until all are ready (warm: connected), signals them all at
// once and measures until the last has joined. Throws Internal when a worker fails.
Sample RunProcs(const ProcRun& run);

// The worker side (rendezvous_bench --worker): fds 3-6 are the start, ready, result and leave
// pipes. Returns the exit code.
int RunProcWorker(const ProcRun& run, int rank);

}  // namespace cohort::bench
