#include "launcher/launch_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <memory>

#include "collectives/registry.h"
#include "collectives/store/store_backends.h"
#include "common/error.h"
#include "common/log.h"
#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"
#include "launcher/supervisor.h"
#include "launcher/termination_log.h"
#include "launcher/worker_env.h"
#include "launcher/worker_store.h"

namespace cohort::launcher {
namespace {

std::vector<std::string>& Program() {
  static std::vector<std::string> program;
  return program;
}

constexpr char kFooter[] = R"(
Examples:
  cohort launch --nproc-per-node 4 -- ./train --epochs 2        one machine, 4 workers
  export COHORT_TOKEN=$(openssl rand -hex 16)                     the same on every node, then
  cohort launch --nnodes 2 --node-rank 0 --rdzv-endpoint node0:29500 -- ./train   on each node
  mpirun -np 8 cohort launch -- ./train                          one worker per MPI process

Where the world comes from, first match wins: these flags; COHORT_NPROC_PER_NODE, COHORT_NNODES,
COHORT_NODE_RANK, COHORT_RDZV_ENDPOINT; a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, node 0 at
<job>-0.<service>); a Kubeflow PyTorchJob (MASTER_ADDR, MASTER_PORT, RANK = node rank,
WORLD_SIZE, PET_NPROC_PER_NODE, PET_NNODES); mpirun (OMPI_COMM_WORLD_*); Slurm (SLURM_NODEID,
SLURM_NNODES); else one node. --dry-run shows what was derived and from where.

Several nodes need COHORT_TOKEN, the same on each: node 0's store listens on every interface and
refuses calls without it (a launch without it is refused, unless --insecure-store). Launchers
meeting on a 127.0.0.1 endpoint need none: the store then listens on loopback only.

Each worker gets COHORT_RANK, COHORT_WORLD_SIZE, COHORT_LOCAL_RANK, COHORT_LOCAL_WORLD_SIZE,
COHORT_NODE_RANK, COHORT_NNODES, COHORT_STORE, COHORT_TOKEN, COHORT_RUN_ID, COHORT_RESTART
(COHORT_PS_SERVERS with --ps-servers), and
torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Its output is
printed line by line as "[rank N] ..."; the launcher's own lines start "[cohort launch]".

A worker that exits non-zero, is killed, or stops heartbeating (collectives/heartbeat.h) stops
the whole group on every node; the group restarts with COHORT_RESTART + 1, up to --max-restarts.
SIGTERM or SIGINT is passed to the workers, which get --grace-period seconds before SIGKILL.

Exit codes:
  0        every worker succeeded
  1-125    the failing worker's exit code (last attempt)
  128+N    the failing worker was killed by signal N; or the launcher was stopped by signal N
  2        bad flags or environment, or the program cannot be started
  3        rendezvous failed (a node never joined, two nodes claimed one rank, nodes disagreed
           on the job's shape, or the endpoint is unreachable)
  124      a worker stopped heartbeating for --heartbeat-timeout)";

int RunLaunch(const LaunchOptions& options) {
  LaunchPlan plan;
  try {
    plan = MakePlan(options);
  } catch (const Error& e) {
    fmt::print(stderr, "cohort launch: {}\n", e.what());
    if (!options.dry_run) WriteTerminationMessage(fmt::format("failed: {}", e.what()));
    return kExitUsage;
  }
  if (!plan.open_door_warning.empty()) {
    fmt::print(stderr, "cohort launch: warning: {}\n", plan.open_door_warning);
  }
  if (!options.dry_run) return Supervise(plan);

  fmt::print("{}", DescribePlan(plan));
  // What the workers would get, assuming every node runs as many workers as this one.
  Assignment a;
  a.node_rank = std::max(0, plan.node_rank.value);
  a.nnodes = plan.max_nodes.value;
  a.nproc = plan.nproc_per_node.value;
  a.world_size = a.nnodes * a.nproc;
  a.first_rank = a.node_rank * a.nproc;
  a.master_addr = "<node 0>";
  fmt::print("\nworkers on this node (COHORT_STORE and MASTER_PORT are fixed at launch):\n");
  for (int l = 0; l < a.nproc; ++l) {
    fmt::print("  local rank {}:", l);
    // With etcd the workers' store is the one node 0 hosts for the round (worker_store.h).
    const std::string store = HasRoundWorkerStore(plan) ? "<node 0>:<port>" : plan.endpoint.value;
    for (const auto& kv : LauncherVariables(plan, a, 0, store, l)) {
      fmt::print(" {}", kv.rfind("COHORT_TOKEN=", 0) == 0 ? "COHORT_TOKEN=***" : kv);
    }
    fmt::print("\n");
  }
  fmt::print("  program: {}\n", fmt::join(plan.program, " "));
  return 0;
}

}  // namespace

Command AddLaunchCommand(CLI::App& parent) {
  auto options = std::make_shared<LaunchOptions>();
  CLI::App* app =
      parent.add_subcommand("launch",
                            "Start and supervise the workers of a training job on this node:\n"
                            "  cohort launch [OPTIONS] [--] PROGRAM [ARGS...]");
  app->footer(kFooter);
  app->add_option("--nproc-per-node", options->nproc_per_node,
                  "workers on this node: N, or auto (one per GPU, else one per CPU core)");
  app->add_option("--nnodes", options->nnodes, "nodes in the job: N, or MIN:MAX (elastic)");
  app->add_option("--node-rank", options->node_rank, "this node's rank (0 hosts the store)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--rdzv-endpoint", options->rdzv_endpoint,
                  "HOST:PORT of node 0's launcher, which hosts the rendezvous store");
  app->add_option("--rdzv-backend", options->rdzv_backend,
                  "rendezvous store: " + collectives::StoreBackendNames() +
                      " (grpc: node 0's launcher hosts it; etcd: an etcd v3 at --rdzv-endpoint)");
  app->add_option("--backend", options->backend,
                  "auto or a backend of this build: " + collectives::BackendNames() +
                      " (COHORT_BACKEND)");
  app->add_option("--ps-servers", options->ps_servers,
                  "parameter servers (`cohort ps-server`) node 0 runs beside its workers; every "
                  "worker gets COHORT_PS_SERVERS (backend ps)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--ps-servers-per-node", options->ps_servers_per_node,
                  "parameter servers every node runs beside its workers (shards in node-rank "
                  "order, a fresh set each round), as BytePS colocates them; not with "
                  "--ps-servers")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--max-restarts", options->max_restarts,
                  "restarts of the whole group after a failure (default 0)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--run-id", options->run_id, "the job's id; the same on every node");
  app->add_option("--checkpoint-uri", options->checkpoint_uri, "where snapshots go");
  app->add_option("--resume", options->resume, "latest, or a snapshot URI");
  app->add_option(
         "--heartbeat-timeout", options->heartbeat_timeout,
         "seconds of silence after which a heartbeating worker counts as hung (300; 0 off)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--grace-period", options->grace_period,
                  "seconds between SIGTERM and SIGKILL when stopping workers (20)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--rdzv-timeout", options->rdzv_timeout,
                  "seconds to wait for every node to join (300)")
      ->check(CLI::PositiveNumber);
  app->add_option("--rdzv-last-call", options->rdzv_last_call,
                  "with --nnodes MIN:MAX, seconds to wait for more nodes once MIN joined (2)")
      ->check(CLI::NonNegativeNumber);
  app->add_flag("--dry-run", options->dry_run,
                "print the derived world, where each value came from, and each worker's env");
  app->add_flag("--insecure-store", options->insecure_store,
                "let other machines reach the store (or etcd) without COHORT_TOKEN (etcd: "
                "COHORT_RDZV_USER/PASSWORD): trusted networks only; refused without it");
  return {app, [options] {
            options->program = Program();
            return RunLaunch(*options);
          }};
}

void SplitLaunchProgram(std::vector<std::string>& args, size_t start) {
  // The launcher's options that take no value; every other option takes one.
  static const char* kFlags[] = {"--dry-run", "--insecure-store", "-h", "--help"};
  for (size_t i = start; i < args.size();) {
    const std::string& a = args[i];
    if (a == "--") {
      Program().assign(args.begin() + i + 1, args.end());
      args.resize(i);
      return;
    }
    if (a.rfind("-", 0) != 0) {
      Program().assign(args.begin() + i, args.end());
      args.resize(i);
      return;
    }
    bool flag = a.find('=') != std::string::npos;
    for (const char* f : kFlags) flag = flag || a == f;
    i += flag ? 1 : 2;
  }
}

}  // namespace cohort::launcher
