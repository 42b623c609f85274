// `cohort render`'s library (launcher/render.h, yaml_json.h) called directly: the token rules,
// the objects per backend, the podTemplate merge, and YAML that reads back as it was meant.
#include "launcher/render.h"

#include <gtest/gtest.h>

#include <string>

#include "common/error.h"
#include "launcher/yaml_json.h"

namespace cohort::launcher {
namespace {

using Json = nlohmann::ordered_json;

Json Spec(const std::string& extra = "") {
  return YamlToJson(
      "apiVersion: cohort.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: t}\n"
      "spec:\n  image: img:1\n  command: [/bin/train]\n  args: [--epochs, 2]\n  nnodes: 3\n"
      "  nprocPerNode: 2\n" +
          extra,
      "test");
}

RenderOptions Fresh() {
  RenderOptions o;
  o.token = RandomToken();
  return o;
}

const Json& Item(const Json& list, const std::string& kind, const std::string& name) {
  for (const Json& item : list["items"]) {
    if (item["kind"] == kind && item["metadata"]["name"] == name) return item;
  }
  throw std::runtime_error("no " + kind + " " + name + " in " + list.dump());
}

const Json& Container(const Json& job) { return job["spec"]["template"]["spec"]["containers"][0]; }

Json Env(const Json& container, const std::string& name) {
  for (const Json& e : container["env"]) {
    if (e["name"] == name) return e;
  }
  return nullptr;
}

TEST(Render, RefusesToRenderWithoutAToken) {
  try {
    RenderTrainingJob(Spec(), RenderOptions{});
    FAIL() << "rendered without a token";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--insecure-no-token"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
  RenderOptions both = Fresh();
  both.insecure_no_token = true;
  EXPECT_THROW(RenderTrainingJob(Spec(), both), InvalidArgument);
}

TEST(Render, FreshTokenOnlyInTheSecret) {
  const RenderOptions o = Fresh();
  ASSERT_EQ(o.token.size(), 32u);
  EXPECT_NE(o.token, RandomToken());
  const Json list = RenderTrainingJob(Spec(), o);
  ASSERT_EQ(list["items"].size(), 3u);  // Secret, Service, Job
  const Json& secret = list["items"][0];
  EXPECT_EQ(secret["kind"], "Secret");
  EXPECT_EQ(secret["type"], "Opaque");
  EXPECT_EQ(secret["stringData"]["token"], o.token);
  const std::string dump = list.dump();
  EXPECT_EQ(dump.find(o.token), dump.rfind(o.token)) << "the token is written twice";
  const Json token = Env(Container(Item(list, "Job", "t")), "COHORT_TOKEN");
  EXPECT_FALSE(token.contains("value"));
  EXPECT_EQ(token["valueFrom"]["secretKeyRef"], (Json{{"name", "t-token"}, {"key", "token"}}));
}

TEST(Render, InsecureNoTokenEmitsNoSecretAndTellsTheLauncher) {
  RenderOptions o;
  o.insecure_no_token = true;
  const Json list = RenderTrainingJob(Spec("  backend: ps\n  psServers: 1\n"), o);
  for (const Json& item : list["items"]) EXPECT_NE(item["kind"], "Secret");
  EXPECT_EQ(list.dump().find("COHORT_TOKEN"), std::string::npos);
  EXPECT_EQ(Container(Item(list, "Job", "t"))["command"][2], "--insecure-store");
  EXPECT_EQ(Container(Item(list, "Job", "t-ps"))["command"].back(), "--insecure");
}

TEST(Render, IndexedJobCarriesTheWorld) {
  const Json list = RenderTrainingJob(Spec("  backend: gloo\n"), Fresh());
  const Json& job = Item(list, "Job", "t");
  EXPECT_EQ(job["spec"]["completions"], 3);
  EXPECT_EQ(job["spec"]["parallelism"], 3);
  EXPECT_EQ(job["spec"]["template"]["spec"]["subdomain"], "t");
  const Json& c = Container(job);
  EXPECT_EQ(c["command"], (Json{"cohort", "launch", "--", "/bin/train", "--epochs", "2"}));
  EXPECT_EQ(Env(c, "COHORT_NNODES")["value"], "3");
  EXPECT_EQ(Env(c, "COHORT_NPROC_PER_NODE")["value"], "2");
  EXPECT_EQ(Env(c, "COHORT_BACKEND")["value"], "gloo");
  EXPECT_EQ(Env(c, "COHORT_RDZV_ENDPOINT")["value"], "t-0.t:29500");
  EXPECT_EQ(Item(list, "Service", "t")["spec"]["clusterIP"], "None");
}

TEST(Render, ParameterServersGetTheirOwnPods) {
  const Json list = RenderTrainingJob(Spec("  backend: ps\n  psServers: 3\n"), Fresh());
  const Json& ps = Item(list, "Job", "t-ps");
  EXPECT_EQ(ps["spec"]["completions"], 3);
  EXPECT_EQ(Container(ps)["command"][1], "ps-server");
  EXPECT_EQ(Env(Container(Item(list, "Job", "t")), "COHORT_PS_SERVERS")["value"],
            "t-ps-0.t-ps:29600,t-ps-1.t-ps:29600,t-ps-2.t-ps:29600");
  EXPECT_EQ(Item(list, "Service", "t-ps")["spec"]["selector"]["batch.kubernetes.io/job-name"],
            "t-ps");
}

TEST(Render, MpiJobWorldIsWorkersTimesSlots) {
  const Json list = RenderTrainingJob(Spec("  backend: mpi\n  maxRestarts: 2\n"), Fresh());
  const Json& mpi = Item(list, "MPIJob", "t");
  EXPECT_EQ(mpi["spec"]["slotsPerWorker"], 2);
  EXPECT_EQ(mpi["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"], 3);
  EXPECT_EQ(mpi["spec"]["runPolicy"]["backoffLimit"], 2);
  const Json& launcher =
      mpi["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0];
  EXPECT_EQ(launcher["command"][2], "6");
  EXPECT_EQ(Env(launcher, "COHORT_RDZV_ENDPOINT")["value"], "t-worker-0.t-worker:29500");
}

TEST(Render, PodTemplateMergesAndRefusesOverrides) {
  const Json list = RenderTrainingJob(
      Spec("  podTemplate:\n    spec:\n      nodeSelector: {pool: gpu}\n"
           "      containers: [{name: cohort, volumeMounts: [{name: d, mountPath: /d}]}]\n"),
      Fresh());
  const Json& job = Item(list, "Job", "t");
  EXPECT_EQ(job["spec"]["template"]["spec"]["nodeSelector"]["pool"], "gpu");
  EXPECT_EQ(Container(job)["volumeMounts"][0]["mountPath"], "/d");
  EXPECT_THROW(RenderTrainingJob(Spec("  podTemplate: {spec: {subdomain: other}}\n"), Fresh()),
               InvalidArgument);
}

TEST(YamlJson, StringsThatLookLikeOtherThingsReadBackAsStrings) {
  const Json doc = {{"a", {"4", "yes", "2:4", "null", "", "0x1f", "1e3", "on", "8Gi", "n"}},
                    {"n", 3},
                    {"x", true}};
  const std::string yaml = JsonToYaml(doc);
  EXPECT_EQ(YamlToJson(yaml, "round trip"), doc) << yaml;
  EXPECT_NE(yaml.find("- 8Gi"), std::string::npos) << yaml;     // plain when it is unambiguous
  EXPECT_NE(yaml.find("\"n\": 3"), std::string::npos) << yaml;  // YAML 1.1 reads n as false
}

TEST(YamlJson, DuplicateKeysAndSeveralDocumentsAreErrors) {
  EXPECT_THROW(YamlToJson("a: 1\na: 2\n", "t"), InvalidArgument);
  EXPECT_THROW(YamlToJson("a: 1\n---\nb: 2\n", "t"), InvalidArgument);
  EXPECT_THROW(YamlToJson("", "t"), InvalidArgument);
}

}  // namespace
}  // namespace cohort::launcher
