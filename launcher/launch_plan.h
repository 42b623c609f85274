// What `cohort launch` will do on this node, derived from its flags, the COHORT_* environment and
// the platform it runs on (a Kubernetes Indexed Job, a Kubeflow PyTorchJob, mpirun, Slurm, or a
// single machine), with the source of every value, so that --dry-run can show where each came
// from.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/env.h"

namespace cohort::launcher {

// The command line, before any derivation. Unset values are empty / -1.
struct LaunchOptions {
  std::string nproc_per_node;  // "N" or "auto"
  std::string nnodes;          // "N" or "MIN:MAX"
  int node_rank = -1;
  std::string rdzv_endpoint;  // host:port
  std::string rdzv_backend;   // a collectives::StoreBackends() name; empty: the default (grpc)
  std::string backend;
  int max_restarts = -1;
  std::string run_id;
  std::string checkpoint_uri;
  std::string resume;
  double heartbeat_timeout = -1;  // seconds; 0 disables
  double grace_period = 20;       // seconds between SIGTERM and SIGKILL
  double rdzv_timeout = 300;      // seconds to wait for every node
  double rdzv_last_call = 2;      // with --nnodes MIN:MAX, how long to wait for more than MIN
  int ps_servers = 0;             // parameter servers node 0 runs (backend ps)
  int ps_servers_per_node = 0;    // ... or this many on every node (not with ps_servers)
  bool dry_run = false;
  // Start a store (or meet on an etcd) that other machines reach without a token (credentials):
  // for trusted networks only; without it such a launch is refused.
  bool insecure_store = false;
  std::vector<std::string> program;  // PROGRAM ARGS...
};

template <typename T>
struct Sourced {
  T value{};
  std::string source;  // "--nproc-per-node", "PET_NNODES", "default", ...
};

struct LaunchPlan {
  // "single node", "Kubernetes Indexed Job", "Kubeflow PyTorchJob", "mpirun", "Slurm".
  std::string platform;
  Sourced<int> nproc_per_node;
  Sourced<int> min_nodes;
  Sourced<int> max_nodes;
  Sourced<int> node_rank;         // -1: assigned by order of arrival
  Sourced<std::string> endpoint;  // host:port of the store node 0's launcher hosts
  Sourced<bool> host_store;       // whether this launcher hosts it
  std::string rdzv_backend;       // the store backend: grpc (node 0 hosts it) or etcd
  Sourced<std::string> run_id;
  Sourced<std::string> backend;  // empty: the workers' default (auto)
  Sourced<int> ps_servers;       // `cohort ps-server` shards node 0 starts; 0: none
  Sourced<int> ps_servers_per_node;  // ... or every node starts (shards in node-rank order)
  Sourced<int> max_restarts;
  // The number of this launcher's first attempt, which its workers get as COHORT_RESTART: 0, or
  // the COHORT_RESTART this launcher was given (the operator recreates a failed Job with
  // COHORT_RESTART + 1, and its workers must see that count, not the launcher's own from 0).
  // Each group restart adds 1.
  Sourced<int> first_restart;
  Sourced<double> heartbeat_timeout;  // 0: off
  std::string token;                  // COHORT_TOKEN, or a fresh one for a single node
  bool token_from_env = false;        // whether COHORT_TOKEN gave it
  // Where node 0's store and parameter servers listen: 0.0.0.0 when other machines must reach
  // them, else the loopback address of the endpoint (a single node, or launchers on 127.0.0.1).
  std::string bind_host;
  // Non-empty when --insecure-store let an open store or etcd through: the warning to print.
  std::string open_door_warning;
  Sourced<std::string> checkpoint_uri;
  Sourced<std::string> resume;
  double grace_period = 20;
  double rdzv_timeout = 300;
  double rdzv_last_call = 2;
  // Under mpirun each launcher starts one worker, which inherits the MPI environment so that
  // the mpi backend can initialize in it.
  bool mpi_passthrough = false;
  std::vector<std::string> program;
};

// Derives the plan. Throws InvalidArgument (one line, naming the flag or variable and the fix),
// also when the store, the etcd or the parameter servers would be reachable from other machines
// without COHORT_TOKEN (etcd: COHORT_RDZV_USER and COHORT_RDZV_PASSWORD) and --insecure-store is
// not given. Launchers that meet on a loopback endpoint need no token: nothing listens beyond
// this machine then (bind_host is loopback).
// Reads the process environment; the second form reads `env` instead (what the detectors of
// platform.h and the tests pass in).
LaunchPlan MakePlan(const LaunchOptions& options);
LaunchPlan MakePlan(const LaunchOptions& options, const env::Map& env);

// How to give a job a token, for the one-line refusals of open stores and servers:
// "export COHORT_TOKEN=$(openssl rand -hex 16) on every node, or ...".
std::string TokenAdvice();

// --rdzv-timeout as a duration: how long any step of a rendezvous may wait.
std::chrono::milliseconds RdzvTimeout(const LaunchPlan& plan);

// Whether the launchers meet on a store that no launcher hosts (etcd), so that each round's node
// rank 0 hosts a store for the workers (worker_store.h).
bool HasRoundWorkerStore(const LaunchPlan& plan);

// Whether this job's launchers start parameter servers (--ps-servers or --ps-servers-per-node).
bool RunsPsServers(const LaunchPlan& plan);

// The host other nodes reach this launcher's services at (the store it hosts, the workers'
// store of a round, parameter servers, MASTER_PORT): 127.0.0.1 for a job of one node; the
// rendezvous endpoint's host when hosts_store (this launcher hosts the store there); else the
// one address it binds (bind_host), or its hostname when it binds every interface.
std::string ServiceHost(const LaunchPlan& plan, bool hosts_store);

// The plan as --dry-run prints it: one line per value with its source.
std::string DescribePlan(const LaunchPlan& plan);

}  // namespace cohort::launcher
