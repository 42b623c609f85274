// The launcher's plan in process: plain environments in, plans (or one-line errors) out. What
// `cohort launch --dry-run` derives on each platform, without starting the command; launch_test
// keeps a couple of --dry-run runs end to end.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/net.h"
#include "launcher/launch_plan.h"
#include "launcher/platform.h"
#include "launcher/termination_log.h"
#include "launcher/worker_env.h"
#include "tests/util/scoped_env.h"
#include "tests/util/test_dir.h"

namespace cohort::launcher {
namespace {

LaunchOptions Program() {
  LaunchOptions o;
  o.program = {"./train"};
  return o;
}

// The error MakePlan throws, or "" when it plans.
std::string PlanError(const LaunchOptions& o, const env::Map& env) {
  try {
    MakePlan(o, env);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "want: " << (part) << "\n" << (text)

// ---- each platform's detector ----

TEST(Plan, LaptopDefaultsToOneWorkerOnLoopbackWithAFreshToken) {
  const LaunchPlan p = MakePlan(Program(), {});
  EXPECT_EQ(p.platform, "single node");
  EXPECT_EQ(p.nproc_per_node.value, 1);
  EXPECT_EQ(p.nproc_per_node.source, "default");
  EXPECT_EQ(p.max_nodes.value, 1);
  EXPECT_EQ(p.node_rank.value, 0);
  EXPECT_EQ(p.node_rank.source, "the only node");
  EXPECT_EQ(p.endpoint.value, "127.0.0.1:0");
  EXPECT_TRUE(p.host_store.value);
  EXPECT_EQ(p.token.size(), 32u);  // fresh: 16 random bytes in hex
  EXPECT_FALSE(p.token_from_env);
  EXPECT_EQ(p.run_id.value.rfind("local-", 0), 0u) << p.run_id.value;
  EXPECT_EQ(p.bind_host, "127.0.0.1");
  EXPECT_FALSE(p.mpi_passthrough);
}

TEST(Plan, PyTorchJobGivesCountsRankAndMaster) {
  const env::Map env = {
      {"PET_NNODES", "2"},    {"PET_NPROC_PER_NODE", "3"}, {"RANK", "1"},
      {"WORLD_SIZE", "6"},    {"MASTER_ADDR", "10.1.2.3"}, {"MASTER_PORT", "29500"},
      {"COHORT_TOKEN", "t0k"}};
  const LaunchPlan p = MakePlan(Program(), env);
  EXPECT_EQ(p.platform, "Kubeflow PyTorchJob");
  EXPECT_EQ(p.nproc_per_node.value, 3);
  EXPECT_EQ(p.nproc_per_node.source, "PET_NPROC_PER_NODE");
  EXPECT_EQ(p.max_nodes.value, 2);
  EXPECT_EQ(p.max_nodes.source, "PET_NNODES");
  EXPECT_EQ(p.node_rank.value, 1);
  EXPECT_EQ(p.node_rank.source, "RANK (a PyTorchJob's node rank)");
  EXPECT_EQ(p.endpoint.value, "10.1.2.3:29500");
  EXPECT_EQ(p.endpoint.source, "MASTER_ADDR:MASTER_PORT");
  EXPECT_FALSE(p.host_store.value);
  EXPECT_EQ(p.bind_host, "0.0.0.0");
  EXPECT_EQ(p.token, "t0k");
  const std::string described = DescribePlan(p);
  for (const char* want :
       {"Kubeflow PyTorchJob", "(PET_NPROC_PER_NODE)", "(PET_NNODES)",
        "(RANK (a PyTorchJob's node rank))", "(MASTER_ADDR:MASTER_PORT)", "(COHORT_TOKEN)"}) {
    EXPECT_HAS(described, want);
  }
}

TEST(Plan, PyTorchJobWorldSizeMustCountEveryProcess) {
  EXPECT_EQ(PlanError(Program(), {{"PET_NNODES", "2"},
                                  {"PET_NPROC_PER_NODE", "3"},
                                  {"RANK", "1"},
                                  {"WORLD_SIZE", "2"},
                                  {"MASTER_ADDR", "h"},
                                  {"MASTER_PORT", "1"}}),
            "WORLD_SIZE=2 but 2 nodes x 3 workers per node = 6; in a PyTorchJob WORLD_SIZE counts "
            "every process: check nprocPerNode and the replica counts");
  // torchrun's "auto" is for --nproc-per-node and COHORT_NPROC_PER_NODE only.
  EXPECT_HAS(PlanError(Program(), {{"PET_NPROC_PER_NODE", "auto"}}),
             "PET_NPROC_PER_NODE='auto' must be an integer >= 1");
}

TEST(Plan, ParameterServersOnEveryNode) {
  LaunchOptions o = Program();
  o.backend = "ps";
  o.ps_servers_per_node = 1;
  const LaunchPlan p = MakePlan(o, {});
  EXPECT_TRUE(RunsPsServers(p));
  EXPECT_EQ(p.ps_servers.value, 0);
  EXPECT_EQ(p.ps_servers_per_node.value, 1);
  EXPECT_EQ(p.ps_servers_per_node.source, "--ps-servers-per-node");
  EXPECT_FALSE(RunsPsServers(MakePlan(Program(), {})));
}

TEST(Plan, IndexedJobRankComesFromTheCompletionIndex) {
  LaunchOptions o = Program();
  o.nproc_per_node = "4";
  const LaunchPlan p = MakePlan(o, {{"JOB_COMPLETION_INDEX", "1"},
                                    {"COHORT_NNODES", "2"},
                                    {"COHORT_RDZV_ENDPOINT", "127.0.0.1:29500"}});
  EXPECT_EQ(p.platform, "Kubernetes Indexed Job");
  EXPECT_EQ(p.nproc_per_node.source, "--nproc-per-node");
  EXPECT_EQ(p.node_rank.value, 1);
  EXPECT_EQ(p.node_rank.source, "JOB_COMPLETION_INDEX");
  EXPECT_EQ(p.endpoint.source, "COHORT_RDZV_ENDPOINT");
  EXPECT_EQ(p.max_nodes.source, "COHORT_NNODES");
  EXPECT_EQ(p.bind_host, "127.0.0.1");  // loopback launchers: no token needed, nothing open
  EXPECT_TRUE(p.token.empty());
}

TEST(Plan, IndexedJobWithoutASubdomainSaysHowToNameNodeZero) {
  // This machine's hostname does not end in -987654, as an Indexed Job pod's would.
  ASSERT_FALSE(net::Hostname().size() > 7 &&
               net::Hostname().compare(net::Hostname().size() - 7, 7, "-987654") == 0);
  EXPECT_EQ(PlanError(Program(), {{"JOB_COMPLETION_INDEX", "987654"}, {"COHORT_NNODES", "987655"}}),
            "in an Indexed Job, node 0's address comes from the pod's hostname and subdomain, and "
            "this pod has none; set COHORT_RDZV_ENDPOINT=<job>-0.<service>:29500 (see "
            "examples/k8s/indexed-job.yaml)");
}

TEST(Plan, MpirunStartsOneWorkerPerProcessOnTheJobIdsPort) {
  const env::Map env = {{"OMPI_COMM_WORLD_SIZE", "3"},
                        {"OMPI_COMM_WORLD_RANK", "2"},
                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "3"},
                        {"OMPI_MCA_ess_base_jobid", "12800"}};
  const LaunchPlan p = MakePlan(Program(), env);
  EXPECT_EQ(p.platform, "mpirun");
  EXPECT_TRUE(p.mpi_passthrough);
  EXPECT_EQ(p.nproc_per_node.value, 1);
  EXPECT_EQ(p.nproc_per_node.source, "mpirun: one worker per MPI process");
  EXPECT_EQ(p.max_nodes.value, 3);
  EXPECT_EQ(p.max_nodes.source, "OMPI_COMM_WORLD_SIZE (one launcher per MPI process)");
  EXPECT_EQ(p.node_rank.value, 2);
  EXPECT_EQ(p.endpoint.value, "127.0.0.1:20032");  // 20000 + 12800 % 12768
  EXPECT_EQ(p.endpoint.source, "mpirun job id (all ranks on this node)");
  LaunchOptions four = Program();
  four.nproc_per_node = "4";
  EXPECT_EQ(PlanError(four, env),
            "under mpirun each launcher starts exactly one worker (mpirun -np sets the world); "
            "drop --nproc-per-node 4 or run the launcher without mpirun");
}

TEST(Plan, SlurmNodeZeroIsTheFirstHostOfTheNodeList) {
  const LaunchPlan p = MakePlan(Program(), {{"SLURM_NTASKS", "2"},
                                            {"SLURM_NNODES", "2"},
                                            {"SLURM_NODEID", "1"},
                                            {"SLURM_JOB_NODELIST", "gpu[07-08]"},
                                            {"COHORT_TOKEN", "t0k"}});
  EXPECT_EQ(p.platform, "Slurm");
  EXPECT_EQ(p.max_nodes.source, "SLURM_NNODES");
  EXPECT_EQ(p.node_rank.value, 1);
  EXPECT_EQ(p.node_rank.source, "SLURM_NODEID");
  EXPECT_EQ(p.endpoint.value, "gpu07:29500");
  EXPECT_EQ(p.endpoint.source, "first host of SLURM_JOB_NODELIST");
  // MASTER_ADDR, which torchrun users on Slurm export, still wins; one node stays on loopback.
  EXPECT_EQ(MakePlan(Program(), {{"SLURM_NTASKS", "2"},
                                 {"SLURM_NNODES", "2"},
                                 {"SLURM_NODEID", "0"},
                                 {"SLURM_JOB_NODELIST", "gpu[07-08]"},
                                 {"MASTER_ADDR", "n0"},
                                 {"MASTER_PORT", "29400"},
                                 {"COHORT_TOKEN", "t0k"}})
                .endpoint.value,
            "n0:29400");
  EXPECT_EQ(
      MakePlan(Program(),
               {{"SLURM_NTASKS", "1"}, {"SLURM_NNODES", "1"}, {"SLURM_JOB_NODELIST", "gpu07"}})
          .endpoint.value,
      "127.0.0.1:0");
}

TEST(Plan, FirstSlurmHostExpandsTheFirstRange) {
  EXPECT_EQ(FirstSlurmHost("gpu[003-008,010],cpu1"), "gpu003");
  EXPECT_EQ(FirstSlurmHost("node7,node8"), "node7");
  EXPECT_EQ(FirstSlurmHost("rack[2-3]-n[5,9]"), "rack2-n5");
  EXPECT_EQ(FirstSlurmHost("a-[4,6]-ib"), "a-4-ib");
  EXPECT_EQ(FirstSlurmHost(""), "");
  EXPECT_EQ(FirstSlurmHost("broken[1-2"), "");
}

// ---- which layer wins ----

TEST(Plan, DetectorsAreTriedInOrderAndTheFirstNamesThePlatform) {
  std::vector<std::string> names;
  for (const PlatformDetector* d : PlatformDetectors()) names.push_back(d->Name());
  EXPECT_EQ(names, (std::vector<std::string>{"Kubernetes Indexed Job", "Kubeflow PyTorchJob",
                                             "mpirun", "Slurm", "single node"}));
  env::Map all = {{"JOB_COMPLETION_INDEX", "0"},
                  {"PET_NNODES", "1"},
                  {"OMPI_COMM_WORLD_SIZE", "1"},
                  {"SLURM_NTASKS", "1"}};
  std::vector<std::string> seen;
  for (const char* drop :
       {"JOB_COMPLETION_INDEX", "PET_NNODES", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"}) {
    seen.push_back(DetectPlatform(all).platform);
    all.erase(drop);
  }
  seen.push_back(DetectPlatform(all).platform);
  EXPECT_EQ(seen, names);
  // An empty value is no value, as for every variable cohort reads.
  EXPECT_EQ(DetectPlatform({{"JOB_COMPLETION_INDEX", ""}}).platform, "single node");
}

TEST(Plan, FlagsBeatCohortVariablesWhichBeatThePlatform) {
  const env::Map env = {{"PET_NNODES", "2"},
                        {"RANK", "1"},
                        {"COHORT_NNODES", "3"},
                        {"COHORT_NODE_RANK", "2"},
                        {"MASTER_ADDR", "10.0.0.1"},
                        {"MASTER_PORT", "1"},
                        {"COHORT_RDZV_ENDPOINT", "10.0.0.2:2"},
                        {"COHORT_TOKEN", "t"}};
  const LaunchPlan by_env = MakePlan(Program(), env);
  EXPECT_EQ(by_env.max_nodes.value, 3);
  EXPECT_EQ(by_env.max_nodes.source, "COHORT_NNODES");
  EXPECT_EQ(by_env.node_rank.value, 2);
  EXPECT_EQ(by_env.node_rank.source, "COHORT_NODE_RANK");
  EXPECT_EQ(by_env.endpoint.value, "10.0.0.2:2");
  LaunchOptions o = Program();
  o.nnodes = "4";
  o.node_rank = 3;
  o.rdzv_endpoint = "10.0.0.3:3";
  const LaunchPlan by_flags = MakePlan(o, env);
  EXPECT_EQ(by_flags.max_nodes.value, 4);
  EXPECT_EQ(by_flags.max_nodes.source, "--nnodes");
  EXPECT_EQ(by_flags.node_rank.value, 3);
  EXPECT_EQ(by_flags.node_rank.source, "--node-rank");
  EXPECT_EQ(by_flags.endpoint.value, "10.0.0.3:3");
  EXPECT_EQ(by_flags.platform, "Kubeflow PyTorchJob");  // the platform is still named
}

TEST(Plan, ElasticNodesAndAutoWorkers) {
  LaunchOptions o = Program();
  o.nnodes = "1:3";
  o.nproc_per_node = "auto";
  o.rdzv_endpoint = "127.0.0.1:29500";
  const LaunchPlan p = MakePlan(o, {});
  EXPECT_EQ(p.min_nodes.value, 1);
  EXPECT_EQ(p.max_nodes.value, 3);
  EXPECT_EQ(p.node_rank.value, -1);
  EXPECT_EQ(p.node_rank.source, "order of arrival at the rendezvous");
  EXPECT_GE(p.nproc_per_node.value, 1);
  EXPECT_EQ(p.nproc_per_node.source.rfind("--nproc-per-node (auto: ", 0), 0u)
      << p.nproc_per_node.source;
  EXPECT_TRUE(p.host_store.value);  // the endpoint is this host: the first to bind it hosts
}

// ---- bad input: one line naming the flag or variable and the fix ----

TEST(Plan, BadInputIsOneLineNamingIt) {
  struct Case {
    LaunchOptions options;
    env::Map env;
    std::string error;
  };
  auto with = [](auto set) {
    LaunchOptions o = Program();
    set(o);
    return o;
  };
  const std::vector<Case> cases = {
      {with([](auto& o) { o.nproc_per_node = "0"; }),
       {},
       "--nproc-per-node='0' must be an integer >= 1"},
      {with([](auto& o) { o.nnodes = "3:2"; }),
       {},
       "--nnodes='3:2': MIN is above MAX; write it as MIN:MAX, e.g. 2:4"},
      {with([](auto& o) { o.nnodes = "2:x"; }), {}, "--nnodes (MAX)='x' must be an integer >= 1"},
      {Program(), {{"COHORT_NNODES", "two"}}, "COHORT_NNODES='two' must be an integer >= 1"},
      {Program(),
       {{"COHORT_MAX_RESTARTS", "-1"}},
       "COHORT_MAX_RESTARTS='-1' must be an integer >= 0"},
      {Program(),
       {{"JOB_COMPLETION_INDEX", "x"}},
       "JOB_COMPLETION_INDEX='x' must be an integer >= 0"},
      {with([](auto& o) {
         o.nnodes = "2";
         o.node_rank = 2;
         o.rdzv_endpoint = "127.0.0.1:1";
       }),
       {},
       "node rank 2 (from --node-rank) is outside a job of 2 nodes; node ranks run from 0 to 1"},
      {with([](auto& o) { o.backend = "carrier-pigeon"; }),
       {},
       "--backend='carrier-pigeon' is not a backend of this build; use auto or one of: "},
      {Program(),
       {{"COHORT_BACKEND", "ps"}},
       "COHORT_BACKEND=ps needs parameter servers: add --ps-servers N (node 0 runs them) or "
       "--ps-servers-per-node N, or set COHORT_PS_SERVERS to running `cohort ps-server` shards"},
      {with([](auto& o) {
         o.backend = "ps";
         o.ps_servers = 2;
         o.ps_servers_per_node = 1;
       }),
       {},
       "--ps-servers N (all on node 0) and --ps-servers-per-node N (on every node) exclude each "
       "other: give one"},
      {with([](auto& o) {
         o.nnodes = "2";
         o.node_rank = 0;
       }),
       {},
       "2 nodes need a rendezvous endpoint: pass --rdzv-endpoint HOST:PORT (node 0's address), or "
       "set COHORT_RDZV_ENDPOINT or MASTER_ADDR and MASTER_PORT"},
      {LaunchOptions{},
       {},
       "no program to run: write it after --, e.g. cohort launch "
       "--nproc-per-node 4 -- ./train --epochs 2"},
  };
  for (const Case& c : cases) {
    const std::string error = PlanError(c.options, c.env);
    EXPECT_EQ(error.rfind(c.error, 0), 0u) << "want: " << c.error << "\ngot:  " << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
}

TEST(Plan, ReachableStoreWithoutATokenIsRefusedUnlessInsecure) {
  const env::Map env = {{"COHORT_NNODES", "2"},
                        {"COHORT_NODE_RANK", "1"},
                        {"COHORT_RDZV_ENDPOINT", "10.1.2.3:29500"}};
  const std::string error = PlanError(Program(), env);
  EXPECT_HAS(error, fmt::format("node rank 1 ({}): no COHORT_TOKEN, and the rendezvous store at "
                                "10.1.2.3:29500 would listen on every interface",
                                net::Hostname()));
  EXPECT_HAS(error, "or pass --insecure-store on a trusted network");
  LaunchOptions insecure = Program();
  insecure.insecure_store = true;
  const LaunchPlan p = MakePlan(insecure, env);
  EXPECT_HAS(p.open_door_warning, "--insecure-store: no COHORT_TOKEN");
  EXPECT_EQ(p.bind_host, "0.0.0.0");
  EXPECT_HAS(DescribePlan(p), "none (store open to anyone who reaches it)");
}

// ---- what the workers get ----

TEST(Plan, WorkersOfNodeOneGetTheirRanksAndTheContract) {
  LaunchOptions o = Program();
  o.checkpoint_uri = "file:///ckpt";
  const LaunchPlan p = MakePlan(o, {{"PET_NNODES", "2"},
                                    {"PET_NPROC_PER_NODE", "3"},
                                    {"RANK", "1"},
                                    {"MASTER_ADDR", "10.1.2.3"},
                                    {"MASTER_PORT", "29500"},
                                    {"COHORT_RUN_ID", "job7"},
                                    {"COHORT_TOKEN", "t0k"}});
  Assignment a;
  a.node_rank = 1, a.nnodes = 2, a.nproc = 3, a.world_size = 6, a.first_rank = 3;
  a.master_addr = "10.1.2.3", a.master_port = 29600;
  const auto vars = LauncherVariables(p, a, 1, "10.1.2.3:29500", 2);
  for (const char* want :
       {"COHORT_RANK=5", "COHORT_WORLD_SIZE=6", "COHORT_LOCAL_RANK=2", "COHORT_NODE_RANK=1",
        "COHORT_RUN_ID=job7", "COHORT_RESTART=1", "COHORT_TOKEN=t0k", "COHORT_RESUME=latest",
        "COHORT_CHECKPOINT_URI=file:///ckpt", "RANK=5", "GROUP_RANK=1", "MASTER_PORT=29600",
        "TORCHELASTIC_RESTART_COUNT=1"}) {
    EXPECT_NE(std::find(vars.begin(), vars.end(), want), vars.end()) << want;
  }
}

TEST(Plan, AJobRecreatedWithARestartCountKeepsCountingFromIt) {
  // The operator recreates a failed Job with COHORT_RESTART=2 and COHORT_RESUME=latest: the
  // launcher's first attempt is number 2 (its workers' COHORT_RESTART, supervisor.cc).
  LaunchOptions o = Program();
  env::Map env = {{"COHORT_RESTART", "2"}};
  const LaunchPlan p = MakePlan(o, env);
  EXPECT_EQ(p.first_restart.value, 2);
  EXPECT_EQ(p.first_restart.source, "COHORT_RESTART");
  EXPECT_HAS(DescribePlan(p), "first restart");
  Assignment a;
  a.nnodes = 1, a.nproc = 1, a.world_size = 1;
  const auto vars = LauncherVariables(p, a, 2, "127.0.0.1:1", 0);
  for (const char* want : {"COHORT_RESTART=2", "TORCHELASTIC_RESTART_COUNT=2"})
    EXPECT_NE(std::find(vars.begin(), vars.end(), want), vars.end()) << want;
  EXPECT_EQ(MakePlan(o, {}).first_restart.value, 0);
  env["COHORT_RESTART"] = "-1";
  EXPECT_THROW(MakePlan(o, env), InvalidArgument);
}

// ---- the termination message ----

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(TerminationLog, PathIsTheVariableElseKubernetesDefaultWhenWritable) {
  const env::Map set = {{"COHORT_TERMINATION_LOG", "/tmp/x"}};
  EXPECT_EQ(TerminationLogPath(&set), "/tmp/x");
  const env::Map none;
  EXPECT_EQ(TerminationLogPath(&none),
            ::access("/dev/termination-log", W_OK) == 0 ? "/dev/termination-log" : "");
}

TEST(TerminationLog, OverwritesWithOneLineCutToKubernetesLimit) {
  cohort::testing::TestDir dir("termlog");
  const std::string file = dir.File("termination-log");
  cohort::testing::ScopedEnv env({{"COHORT_TERMINATION_LOG", file}});
  ASSERT_TRUE(WriteTerminationMessage(std::string(10000, 'x')));
  const std::string long_one = ReadFile(file);
  EXPECT_EQ(long_one.size(), kTerminationMessageLimit);
  EXPECT_EQ(long_one.back(), '\n');
  ASSERT_TRUE(WriteTerminationMessage("failed: rank 2 on node 0 exited with code 7"));
  EXPECT_EQ(ReadFile(file), "failed: rank 2 on node 0 exited with code 7\n");  // not appended
}

TEST(TerminationLog, UnwritablePathIsIgnored) {
  cohort::testing::ScopedEnv env({{"COHORT_TERMINATION_LOG", "/proc/no-such-dir/termination-log"}});
  EXPECT_FALSE(WriteTerminationMessage("succeeded"));
}

}  // namespace
}  // namespace cohort::launcher
