// The manifests `cohort render` writes imply exactly the world the launcher's planner derives:
// every pod a rendered Indexed Job implies gets the environment Kubernetes would give its
// container, and MakePlan on that environment and the container's command line must plan the
// spec's job (rank, counts, node 0's address, run id, backend, restarts, snapshots, token,
// program). "Kubernetes" here is only what reaches a container's start: env values, the
// downward API, Secrets, what the Job controller adds (JOB_COMPLETION_INDEX, the pod's
// hostname), $(VAR) expansion, and the DNS names headless Services give pods.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "collectives/registry.h"
#include "common/env.h"
#include "common/error.h"
#include "launcher/launch_plan.h"
#include "launcher/render.h"
#include "launcher/yaml_json.h"
#include "tests/launcher/indexed_job_pods.h"

namespace cohort::launcher {
namespace {

using Json = nlohmann::ordered_json;
using pods::Cluster;
using pods::Pod;

// `cohort launch [--insecure-store] -- PROGRAM...`, as the launcher's command line reads it.
LaunchOptions ParseLaunch(const std::vector<std::string>& argv) {
  LaunchOptions o;
  EXPECT_GE(argv.size(), 2u);
  if (argv.size() < 2 || argv[0] != "cohort" || argv[1] != "launch") {
    ADD_FAILURE() << "not `cohort launch ...`: " << fmt::format("{}", fmt::join(argv, " "));
    return o;
  }
  size_t i = 2;
  for (; i < argv.size() && argv[i] != "--"; ++i) {
    if (argv[i] == "--insecure-store") {
      o.insecure_store = true;
    } else {
      ADD_FAILURE() << "render passed `cohort launch` " << argv[i] << ", which this test ignores";
    }
  }
  EXPECT_LT(i, argv.size()) << "no -- before the program";
  if (i < argv.size()) o.program.assign(argv.begin() + i + 1, argv.end());
  return o;
}

// ---- the spec's job, and what every pod's plan must say ----

// What the spec says, written out by each test (not derived by render's own parser).
struct Want {
  std::string name;
  std::string ns = "default";
  int min_nodes = 1;
  int max_nodes = 1;
  int nproc = 1;        // 0: auto
  std::string backend;  // "" for auto
  int max_restarts = 0;
  std::string checkpoint_uri;
  std::vector<std::string> program;
  std::string token;  // "" with --insecure-no-token
};

struct PodPlan {
  Pod pod;
  env::Map env;
  LaunchPlan plan;
};

const Json& WorkerJob(const Cluster& c, const Want& w) {
  const Json* job = pods::Find(c, "Job", w.name, w.ns);
  if (!job) throw std::runtime_error("no Job " + w.name + " in " + c.list.dump());
  return *job;
}

void ExpectWorld(const Want& w, const PodPlan& pp) {
  const LaunchPlan& p = pp.plan;
  const int i = pp.pod.index;
  EXPECT_EQ(p.platform, "Kubernetes Indexed Job");
  EXPECT_EQ(p.node_rank.value, i);
  EXPECT_EQ(p.node_rank.source, "JOB_COMPLETION_INDEX");
  EXPECT_EQ(p.min_nodes.value, w.min_nodes);
  EXPECT_EQ(p.max_nodes.value, w.max_nodes);
  EXPECT_EQ(p.max_nodes.source, "COHORT_NNODES");
  if (w.nproc > 0) {
    EXPECT_EQ(p.nproc_per_node.value, w.nproc);
    EXPECT_EQ(p.nproc_per_node.source, "COHORT_NPROC_PER_NODE");
  } else {
    EXPECT_GE(p.nproc_per_node.value, 1);
    EXPECT_EQ(p.nproc_per_node.source.rfind("COHORT_NPROC_PER_NODE (auto: ", 0), 0u)
        << p.nproc_per_node.source;
  }
  EXPECT_EQ(p.endpoint.value, fmt::format("{}-0.{}:29500", w.name, w.name));
  EXPECT_EQ(p.endpoint.source, "COHORT_RDZV_ENDPOINT");
  EXPECT_EQ(p.host_store.value, i == 0);
  EXPECT_EQ(p.rdzv_backend, "grpc");
  EXPECT_EQ(p.bind_host, "0.0.0.0");
  EXPECT_FALSE(p.mpi_passthrough);
}

void ExpectJob(const Want& w, const PodPlan& pp) {
  const LaunchPlan& p = pp.plan;
  EXPECT_EQ(p.run_id.value, w.name);
  EXPECT_EQ(p.run_id.source, "COHORT_RUN_ID");
  EXPECT_EQ(p.backend.value, w.backend);
  EXPECT_EQ(p.ps_servers.value, 0);  // node 0 starts none: the ps Job runs them
  EXPECT_EQ(p.max_restarts.value, w.max_restarts);
  EXPECT_EQ(p.checkpoint_uri.value, w.checkpoint_uri);
  EXPECT_EQ(p.program, w.program);
  if (!w.token.empty()) {
    EXPECT_EQ(p.token, w.token);
    EXPECT_TRUE(p.token_from_env);
    EXPECT_EQ(p.open_door_warning, "");
  } else {
    EXPECT_EQ(p.token, "");
    EXPECT_FALSE(p.token_from_env);
    EXPECT_EQ(p.open_door_warning.rfind("--insecure-store: ", 0), 0u) << p.open_door_warning;
  }
  EXPECT_NE(DescribePlan(p).find("Kubernetes Indexed Job"), std::string::npos);
}

// Node 0's address names pod 0 of the worker Job, on the port its container declares.
void ExpectEndpointIsPodZero(const Cluster& c, const Want& w, const PodPlan& pp) {
  const std::string& ep = pp.plan.endpoint.value;
  const std::string host = ep.substr(0, ep.rfind(':'));
  const std::optional<Pod> zero = pods::Resolve(c, host, pp.pod.ns);
  ASSERT_TRUE(zero) << host << " resolves to no pod in namespace " << pp.pod.ns;
  EXPECT_EQ(zero->job, w.name);
  EXPECT_EQ(zero->index, 0);
  EXPECT_EQ(zero->container["ports"][0]["containerPort"].get<int>(),
            std::stoi(ep.substr(ep.rfind(':') + 1)));
}

// Plans every pod of the worker Job and checks each plan against the spec.
std::vector<PodPlan> PlanEveryPod(const Cluster& c, const Want& w) {
  const Json& job = WorkerJob(c, w);
  EXPECT_EQ(job["spec"]["completions"].get<int>(), w.max_nodes);
  EXPECT_EQ(job["spec"]["parallelism"].get<int>(), w.max_nodes);
  std::vector<PodPlan> out;
  for (const Pod& pod : pods::PodsOf(job)) {
    SCOPED_TRACE(pod.hostname);
    const env::Map env = pods::PodEnv(c, pod);
    const LaunchOptions options = ParseLaunch(pods::PodArgv(pod, env));
    EXPECT_EQ(options.insecure_store, w.token.empty());
    PodPlan pp{pod, env, {}};
    try {
      pp.plan = MakePlan(options, env);
    } catch (const Error& e) {
      ADD_FAILURE() << pod.hostname << ": MakePlan refused the rendered pod: " << e.what();
      continue;
    }
    ExpectWorld(w, pp);
    ExpectJob(w, pp);
    ExpectEndpointIsPodZero(c, w, pp);
    out.push_back(std::move(pp));
  }
  EXPECT_EQ(out.size(), static_cast<size_t>(w.max_nodes));
  return out;
}

// The workers' COHORT_PS_SERVERS lists, in shard order, addresses that resolve to the ps Job's
// pods, each of which serves that shard of that many on that port, with the workers' token.
void ExpectPsServers(const Cluster& c, const PodPlan& worker, int shards) {
  std::vector<std::string> addresses;
  std::stringstream list(worker.env.at(env::kPsServers.name()));
  for (std::string a; std::getline(list, a, ',');) addresses.push_back(a);
  ASSERT_EQ(addresses.size(), static_cast<size_t>(shards));
  for (int i = 0; i < shards; ++i) {
    SCOPED_TRACE(addresses[i]);
    const std::string host = addresses[i].substr(0, addresses[i].rfind(':'));
    const std::string port = addresses[i].substr(addresses[i].rfind(':') + 1);
    const std::optional<Pod> ps = pods::Resolve(c, host, worker.pod.ns);
    ASSERT_TRUE(ps) << host << " resolves to no pod";
    EXPECT_EQ(ps->job, worker.pod.job + "-ps");
    EXPECT_EQ(ps->index, i);
    const env::Map env = pods::PodEnv(c, *ps);
    const std::vector<std::string> argv = pods::PodArgv(*ps, env);
    auto flag = [&argv](const std::string& name) -> std::string {
      auto it = std::find(argv.begin(), argv.end(), name);
      return it == argv.end() || it + 1 == argv.end() ? "" : *(it + 1);
    };
    ASSERT_GE(argv.size(), 2u);
    EXPECT_EQ(argv[0], "cohort");
    EXPECT_EQ(argv[1], "ps-server");
    EXPECT_EQ(flag("--port"), port);
    EXPECT_EQ(flag("--shard"), std::to_string(i));
    EXPECT_EQ(flag("--shards"), std::to_string(shards));
    const bool insecure = std::find(argv.begin(), argv.end(), "--insecure") != argv.end();
    EXPECT_EQ(insecure, worker.plan.token.empty());
    EXPECT_EQ(env::kToken.Str("", &env), worker.plan.token);
  }
}

Json Spec(const std::string& text) { return YamlToJson(text, "render_plan_test"); }

RenderOptions Fresh() {
  RenderOptions o;
  o.token = RandomToken();
  return o;
}

bool Built(const std::string& backend) {
  for (const auto& b : collectives::Backends()) {
    if (backend == b.name) return true;
  }
  return false;
}

// ---- the specs ----

TEST(RenderPlan, GlooPodsPlanTheSpecsWorld) {
  if (!Built("gloo")) GTEST_SKIP() << "gloo is not built";
  const RenderOptions o = Fresh();
  const Cluster c{RenderTrainingJob(Spec(R"(
apiVersion: cohort.dev/v1alpha1
kind: TrainingJob
metadata: {name: fmnist, namespace: ml}
spec:
  image: cohort-train:0.1.0
  command: [/opt/cohort/bin/fashion_mnist]
  args: [--epochs, 2]
  nnodes: 3
  nprocPerNode: 2
  backend: gloo
  maxRestarts: 3
  checkpointURI: s3://bucket/fmnist
)"),
                                    o),
                  {}};
  const Want w{"fmnist",
               "ml",
               3,
               3,
               2,
               "gloo",
               3,
               "s3://bucket/fmnist",
               {"/opt/cohort/bin/fashion_mnist", "--epochs", "2"},
               o.token};
  const auto plans = PlanEveryPod(c, w);
  for (const PodPlan& pp : plans) {
    EXPECT_FALSE(pp.env.count(env::kPsServers.name()));
    EXPECT_EQ(pp.plan.heartbeat_timeout.value, 300);  // nothing in the spec sets it
  }
}

TEST(RenderPlan, PsWorkersFindEveryShard) {
  if (!Built("ps")) GTEST_SKIP() << "ps is not built";
  const RenderOptions o = Fresh();
  const Cluster c{RenderTrainingJob(Spec(R"(
apiVersion: cohort.dev/v1alpha1
kind: TrainingJob
metadata: {name: wide}
spec:
  image: img:1
  command: [/bin/train, --async]
  nnodes: 2
  nprocPerNode: 3
  backend: ps
  psServers: 2
)"),
                                    o),
                  {}};
  const Want w{"wide", "default", 2, 2, 3, "ps", 0, "", {"/bin/train", "--async"}, o.token};
  const auto plans = PlanEveryPod(c, w);
  ASSERT_EQ(plans.size(), 2u);
  for (const PodPlan& pp : plans) {
    SCOPED_TRACE(pp.pod.hostname);
    EXPECT_EQ(pp.env.at(env::kPsServers.name()), "wide-ps-0.wide-ps:29600,wide-ps-1.wide-ps:29600");
    ExpectPsServers(c, pp, 2);
  }
}

TEST(RenderPlan, ElasticPodsPlanMinToMax) {
  const RenderOptions o = Fresh();
  const Cluster c{RenderTrainingJob(Spec(R"(
apiVersion: cohort.dev/v1alpha1
kind: TrainingJob
metadata: {name: stretch}
spec:
  image: img:1
  command: [/bin/train]
  nnodes: "2:4"
  maxRestarts: 5
)"),
                                    o),
                  {}};
  // backend auto: no COHORT_BACKEND, the workers' default.
  const Want w{"stretch", "default", 2, 4, 1, "", 5, "", {"/bin/train"}, o.token};
  const auto plans = PlanEveryPod(c, w);
  ASSERT_EQ(plans.size(), 4u);
  EXPECT_EQ(plans[0].plan.backend.source, "the workers' default (auto)");
}

TEST(RenderPlan, EnvOverridesReachThePlan) {
  RenderOptions o;
  o.token_secret = "team-a-cohort";
  const std::string token = "0123456789abcdef0123456789abcdef";
  const Cluster c{RenderTrainingJob(Spec(R"(
apiVersion: cohort.dev/v1alpha1
kind: TrainingJob
metadata: {name: tuned, namespace: team-a}
spec:
  image: img:1
  command: [/bin/train]
  nnodes: 2
  nprocPerNode: auto
  checkpointURI: s3://ckpt/tuned
  env:
    - {name: COHORT_HEARTBEAT_TIMEOUT, value: "60"}
    - {name: COHORT_RESUME, value: "$(COHORT_CHECKPOINT_URI)/step-00000100"}
    - {name: MASTER_ADDR, value: elsewhere}
    - {name: MASTER_PORT, value: "1234"}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
)"),
                                    o),
                  {{"team-a-cohort", token}}};
  EXPECT_EQ(c.list["items"][0]["kind"], "Service");  // no Secret: the existing one is used
  const Want w{"tuned", "team-a", 2, 2, 0, "", 0, "s3://ckpt/tuned", {"/bin/train"}, token};
  for (const PodPlan& pp : PlanEveryPod(c, w)) {
    SCOPED_TRACE(pp.pod.hostname);
    EXPECT_EQ(pp.plan.heartbeat_timeout.value, 60);
    EXPECT_EQ(pp.plan.heartbeat_timeout.source, "COHORT_HEARTBEAT_TIMEOUT");
    // render's variables come before spec.env, so $(COHORT_CHECKPOINT_URI) expands.
    EXPECT_EQ(pp.plan.resume.value, "s3://ckpt/tuned/step-00000100");
    EXPECT_EQ(pp.env.at("POD_NAME").rfind(pp.pod.hostname + "-", 0), 0u);
    // MASTER_ADDR/MASTER_PORT do not move node 0: COHORT_RDZV_ENDPOINT is above them.
    EXPECT_EQ(pp.env.at("MASTER_ADDR"), "elsewhere");
  }
}

TEST(RenderPlan, InsecureNoTokenPlansAnInsecureStore) {
  if (!Built("ps")) GTEST_SKIP() << "ps is not built";
  RenderOptions o;
  o.insecure_no_token = true;
  const Cluster c{RenderTrainingJob(Spec(R"(
apiVersion: cohort.dev/v1alpha1
kind: TrainingJob
metadata: {name: open}
spec:
  image: img:1
  command: [/bin/train]
  nnodes: 2
  backend: ps
  psServers: 1
)"),
                                    o),
                  {}};
  const Want w{"open", "default", 2, 2, 1, "ps", 0, "", {"/bin/train"}, ""};
  const auto plans = PlanEveryPod(c, w);
  ASSERT_EQ(plans.size(), 2u);
  for (const PodPlan& pp : plans) {
    EXPECT_FALSE(pp.env.count(env::kToken.name()));
    ExpectPsServers(c, pp, 1);
  }
  // The same pod without --insecure-store is refused, naming the variable and the flag.
  LaunchOptions strict;
  strict.program = {"/bin/train"};
  try {
    MakePlan(strict, plans[0].env);
    ADD_FAILURE() << "planned an open store without --insecure-store";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("COHORT_TOKEN"), std::string::npos) << what;
    EXPECT_NE(what.find("--insecure-store"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

// Without JOB_COMPLETION_INDEX nothing names the platform or the node's rank: MakePlan does not
// refuse (no message); it plans a "single node" platform whose launchers take their ranks by
// arrival, and since node 0's address <job>-0.<job> is not this host, none of them hosts the
// store. In pod 0 itself gethostname() is <job>-0, not <job>-0.<job>, so it would not host
// either: such a job waits out the rendezvous timeout rather than failing in one line.
TEST(RenderPlan, WithoutJobCompletionIndexNodesRankByArrival) {
  const RenderOptions o = Fresh();
  const Cluster c{RenderTrainingJob(Spec(R"(
apiVersion: cohort.dev/v1alpha1
kind: TrainingJob
metadata: {name: lost}
spec: {image: "img:1", command: [/bin/train], nnodes: 2}
)"),
                                    o),
                  {}};
  const Json* job = pods::Find(c, "Job", "lost", "default");
  ASSERT_NE(job, nullptr);
  for (const Pod& pod : pods::PodsOf(*job)) {
    SCOPED_TRACE(pod.hostname);
    env::Map env = pods::PodEnv(c, pod);
    ASSERT_EQ(env.erase("JOB_COMPLETION_INDEX"), 1u);
    const LaunchOptions options = ParseLaunch(pods::PodArgv(pod, env));
    LaunchPlan p;
    ASSERT_NO_THROW(p = MakePlan(options, env));
    EXPECT_EQ(p.platform, "single node");
    EXPECT_EQ(p.node_rank.value, -1);
    EXPECT_EQ(p.node_rank.source, "order of arrival at the rendezvous");
    EXPECT_EQ(p.max_nodes.value, 2);
    EXPECT_EQ(p.endpoint.value, "lost-0.lost:29500");
    EXPECT_FALSE(p.host_store.value) << p.host_store.source;
  }
}

}  // namespace
}  // namespace cohort::launcher
