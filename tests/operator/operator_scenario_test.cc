// cohort-operator as a process against the Kubernetes API-server double (tests/util/kube/),
// whose Job controller runs each pod as a local process: the rendered pods really run
// `cohort launch -- /bin/sh -c SCRIPT` on 2 nodes, with the token from the Secret the operator
// made. kubectl (the machine's) applies, reads and deletes TrainingJobs. Scenarios: create ->
// Running -> Succeeded; a failing rank -> Restarting -> recreated with COHORT_RESTART=1 and
// COHORT_RESUME=latest -> Succeeded; maxRestarts exceeded -> Failed naming the rank, and a
// failed job's parameter servers deleted; delete
// cascades; the operator killed mid-job and started again makes no duplicates; a dropped watch
// and a 410 relist; two replicas, one leader, and the other takes over; an invalid spec;
// suspend and resume; and Fashion-MNIST (2 nodes x 2 workers) trained through a killed pod.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

#include "operator/job_status.h"
#include "operator/kube_client.h"
#include "tests/launcher/elastic_job.h"
#include "tests/operator/operator_fixture.h"

namespace cohort::k8s {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::BinPath;
using testing::ProcessResult;
using testing::Subprocess;

class OperatorScenario : public testing::OperatorFixture {
 protected:
  OperatorScenario() : OperatorFixture("operator") {}

  // A TrainingJob of 2 nodes x 1 worker whose workers run `sh -c script`.
  Json TrainingJob(const std::string& name, const std::string& script, Json spec = Json::object()) {
    Json doc = {{"apiVersion", "cohort.dev/v1alpha1"},
                {"kind", "TrainingJob"},
                {"metadata", {{"name", name}, {"namespace", "default"}}},
                {"spec",
                 {{"image", "cohort-train:0.1.0"},
                  {"command", {"/bin/sh", "-c", script}},
                  {"nnodes", 2},
                  {"nprocPerNode", 1},
                  {"backend", "gloo"}}}};
    for (const auto& [k, v] : spec.items()) doc["spec"][k] = v;
    return doc;
  }

  // Polls the Job until test(job) holds (the operator writes the status before it acts).
  bool AwaitJob(const std::string& name, const std::function<bool(const Json&)>& test,
                double timeout_s = 10) {
    return !Await(kJobs, name, test, timeout_s).is_null();
  }

  static std::string EnvOf(const Json& job, const std::string& name) {
    for (const Json& e : job["spec"]["template"]["spec"]["containers"][0]["env"])
      if (e["name"] == name) return e.value("value", "");
    return "";
  }
};

TEST_F(OperatorScenario, CreateRunsToSucceededWithOwnedObjectsAndASecretToken) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("fm", "sleep 1.5"));
  std::vector<std::string> phases;
  const Json done = AwaitPhase("fm", "Succeeded", 30, &phases);
  ASSERT_FALSE(done.is_null()) << op->Output();
  EXPECT_NE(std::find(phases.begin(), phases.end(), "Running"), phases.end())
      << "phases seen: " << ::testing::PrintToString(phases);
  EXPECT_EQ(done["status"]["restartCount"], 0);
  EXPECT_EQ(done["status"]["observedGeneration"], done["metadata"]["generation"]);
  EXPECT_EQ((*Condition(done, "Created"))["status"], "True");
  EXPECT_EQ((*Condition(done, "Running"))["status"], "False");
  EXPECT_EQ((*Condition(done, "Succeeded"))["status"], "True");
  const std::string uid = done["metadata"]["uid"];
  for (const auto& [r, name] :
       {std::pair{kSecrets, "fm-token"}, {kServices, "fm"}, {kJobs, "fm"}}) {
    const ApiResult got = Read(r, name);
    ASSERT_TRUE(got.ok()) << name << ": " << got.Message();
    const Json& ref = got.body["metadata"]["ownerReferences"][0];
    EXPECT_EQ(ref["uid"], uid);
    EXPECT_EQ(ref["controller"], true);
    EXPECT_EQ(ref["blockOwnerDeletion"], true);
  }
  // The token: 32 hex digits in the Secret, never in the status or the operator's log.
  const ApiResult secret = Read(kSecrets, "fm-token");
  ASSERT_TRUE(secret.body["data"].contains("token"));
  const std::string token = secret.body["data"]["token"];
  EXPECT_EQ(token.size(), 44u);  // base64 of 32 characters
  EXPECT_EQ(done["status"].dump().find(token), std::string::npos);
  const ProcessResult get = Kubectl({"get", "trainingjobs"});
  EXPECT_NE(get.output.find("Succeeded"), std::string::npos) << get.output;
  EXPECT_NE(get.output.find("PHASE"), std::string::npos) << get.output;
  op->Kill(SIGTERM);
  EXPECT_EQ(op->Wait(seconds(10)).exit_code, 0) << op->Output();
}

TEST_F(OperatorScenario, AFailingRankRestartsFromLatestThenSucceeds) {
  auto op = StartOperator("op-a");
  // Rank 1 fails until its workers are told they run attempt 1 and resume (the operator's
  // restart: the launcher passes the pod's COHORT_RESTART on, and restarts nothing itself).
  Apply(TrainingJob("fm",
                    "[ \"$COHORT_RESTART\" = 1 ] && [ \"$COHORT_RESUME\" = latest ] && exit 0; "
                    "[ \"$COHORT_RANK\" = 1 ] && exit 7; sleep 0.5",
                    {{"maxRestarts", 1}}));
  std::vector<std::string> phases;
  const Json done = AwaitPhase("fm", "Succeeded", 45, &phases);
  ASSERT_FALSE(done.is_null()) << ::testing::PrintToString(phases) << op->Output();
  EXPECT_NE(std::find(phases.begin(), phases.end(), "Restarting"), phases.end())
      << ::testing::PrintToString(phases);
  EXPECT_EQ(done["status"]["restartCount"], 1);
  const Json* restarting = Condition(done, "Restarting");
  ASSERT_NE(restarting, nullptr);
  EXPECT_NE((*restarting)["message"].get<std::string>().find("rank 1"), std::string::npos)
      << (*restarting)["message"];
  const Json job = Read(kJobs, "fm").body;
  EXPECT_EQ(job["metadata"]["annotations"][kAttemptAnnotation], "1");
  EXPECT_EQ(EnvOf(job, "COHORT_RESTART"), "1");
  EXPECT_EQ(EnvOf(job, "COHORT_RESUME"), "latest");
}

TEST_F(OperatorScenario, MaxRestartsExceededFailsNamingTheRank) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("fm", "[ \"$COHORT_RANK\" = 1 ] && exit 7; sleep 0.5", {{"maxRestarts", 1}}));
  const Json failed = AwaitPhase("fm", "Failed", 45);
  ASSERT_FALSE(failed.is_null()) << op->Output();
  EXPECT_EQ(failed["status"]["restartCount"], 1);
  const Json* c = Condition(failed, "Failed");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)["reason"], "RestartsExhausted");
  const std::string message = (*c)["message"];
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  EXPECT_NE(message.find("code 7"), std::string::npos) << message;
  EXPECT_NE(message.find("after 1 restart"), std::string::npos) << message;
  // The operator restarted once; the launchers in its pods did not restart on their own.
  EXPECT_EQ(message.find("no restarts"), std::string::npos) << message;
  EXPECT_EQ(Count(kJobs, "fm"), 1);  // no third attempt
  EXPECT_EQ(PodLogs().find("restarting the group"), std::string::npos) << PodLogs();
}

// The servers end by themselves only after a success: a job that fails for good takes its
// parameter-server Job and pods with it, and keeps its worker Job (its logs, its verdict).
TEST_F(OperatorScenario, AFailedJobDeletesItsParameterServers) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("fm", "exit 7", {{"backend", "ps"}, {"psServers", 1}}));
  ASSERT_FALSE(Await(kJobs, "fm-ps", [](const Json&) { return true; }).is_null()) << op->Output();
  auto server_pods = [&] {
    const ApiResult list = client_.List(ResourcePath(kPods, "default"),
                                        "labelSelector=batch.kubernetes.io/job-name%3Dfm-ps");
    EXPECT_TRUE(list.ok()) << list.Message();
    return list.body["items"].size();
  };
  ASSERT_FALSE(Await(kJobs, "fm-ps", [&](const Json&) { return server_pods() > 0; }).is_null());
  ASSERT_FALSE(AwaitPhase("fm", "Failed", 45).is_null()) << op->Output();
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         (Read(kJobs, "fm-ps").ok() || server_pods() > 0))
    std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(Read(kJobs, "fm-ps").status, 404) << op->Output();
  EXPECT_EQ(server_pods(), 0u);
  EXPECT_TRUE(Read(kJobs, "fm").ok());
  std::this_thread::sleep_for(milliseconds(1000));  // and the operator does not bring it back
  EXPECT_EQ(Read(kJobs, "fm-ps").status, 404);
}

// An operator that died between writing "Failed" and deleting the servers: the next one, which
// finds the TrainingJob already final, deletes them.
TEST_F(OperatorScenario, TheNextOperatorDeletesTheServersOfAJobAlreadyFailed) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("fm", "sleep 60", {{"backend", "ps"}, {"psServers", 1}}));
  ASSERT_FALSE(Await(kJobs, "fm-ps", [](const Json&) { return true; }).is_null()) << op->Output();
  ASSERT_FALSE(AwaitPhase("fm", "Running", 20).is_null()) << op->Output();
  op->Kill(SIGKILL);
  op->Wait(seconds(5));
  Json tj = Read(kTrainingJobs, "fm").body;
  tj["status"]["phase"] = "Failed";
  tj["status"]["observedGeneration"] = tj["metadata"].value("generation", 1);
  tj["status"]["conditions"] = Json::array({{{"type", "Failed"},
                                             {"status", "True"},
                                             {"reason", "RankFailed"},
                                             {"message", "rank 1 exited with code 7"}}});
  const ApiResult wrote = client_.UpdateStatus(ResourcePath(kTrainingJobs, "default", "fm"), tj);
  ASSERT_TRUE(wrote.ok()) << wrote.Message();
  ASSERT_TRUE(Read(kJobs, "fm-ps").ok());
  auto again = StartOperator("op-b");  // waits out op-a's Lease, then leads
  const auto deadline = std::chrono::steady_clock::now() + seconds(15);
  while (std::chrono::steady_clock::now() < deadline && Read(kJobs, "fm-ps").ok())
    std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(Read(kJobs, "fm-ps").status, 404) << again->Output();
  EXPECT_TRUE(Read(kJobs, "fm").ok());  // the worker Job stays
  EXPECT_EQ(Read(kTrainingJobs, "fm").body["status"]["phase"], "Failed");
}

TEST_F(OperatorScenario, DeletingTheTrainingJobDeletesEverythingItOwns) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("fm", "sleep 30"));
  ASSERT_FALSE(AwaitPhase("fm", "Running", 20).is_null()) << op->Output();
  EXPECT_EQ(Count(kJobs, "fm"), 1);
  const ProcessResult r = Kubectl({"delete", "trainingjob", "fm", "--wait=false"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         (Read(kJobs, "fm").ok() || Read(kSecrets, "fm-token").ok() || Read(kServices, "fm").ok()))
    std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(Read(kJobs, "fm").status, 404);
  EXPECT_EQ(Read(kSecrets, "fm-token").status, 404);
  EXPECT_EQ(Read(kServices, "fm").status, 404);
  std::this_thread::sleep_for(milliseconds(1000));  // and the operator does not bring them back
  EXPECT_EQ(Read(kJobs, "fm").status, 404);
  EXPECT_EQ(Read(kTrainingJobs, "fm").status, 404);
}

TEST_F(OperatorScenario, AnOperatorKilledMidJobAndStartedAgainMakesNoDuplicates) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("fm", "sleep 4"));
  ASSERT_FALSE(AwaitPhase("fm", "Running", 20).is_null()) << op->Output();
  const std::string job_uid = Read(kJobs, "fm").body["metadata"]["uid"];
  const std::string secret_rv = Read(kSecrets, "fm-token").body["metadata"]["resourceVersion"];
  op->Kill(SIGKILL);
  op->Wait(seconds(5));
  auto again = StartOperator("op-b");  // a new pod: waits out op-a's Lease, then leads
  const Json done = AwaitPhase("fm", "Succeeded", 30);
  ASSERT_FALSE(done.is_null()) << again->Output();
  EXPECT_EQ(Read(kJobs, "fm").body["metadata"]["uid"], job_uid);  // the same Job, not a new one
  EXPECT_EQ(Read(kSecrets, "fm-token").body["metadata"]["resourceVersion"], secret_rv);
  EXPECT_EQ(Count(kJobs, "fm"), 1);
  EXPECT_EQ(Count(kServices, "fm"), 1);
  EXPECT_EQ(Count(kSecrets, "fm"), 1);
  EXPECT_EQ(done["status"]["restartCount"], 0);
  EXPECT_NE(again->Output().find("op-b is the leader"), std::string::npos) << again->Output();
}

TEST_F(OperatorScenario, ADroppedWatchReconnectsAndA410Relists) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("one", "true"));
  ASSERT_FALSE(AwaitPhase("one", "Succeeded", 30).is_null()) << op->Output();
  api_.store().DropWatches();  // the stream ends: the operator watches again from where it was
  Apply(TrainingJob("two", "true"));
  ASSERT_FALSE(AwaitPhase("two", "Succeeded", 30).is_null()) << op->Output();
  // Something else changes (the operator's TrainingJob watch does not see it), then the history
  // is forgotten: the operator's resourceVersion is now too old, 410, then a fresh list.
  const Json other = {{"apiVersion", "v1"},
                      {"kind", "ConfigMap"},
                      {"metadata", {{"name", "unrelated"}}},
                      {"data", {{"a", "b"}}}};
  ASSERT_EQ(client_.Create("/api/v1/namespaces/default/configmaps", other).status, 201);
  api_.store().Compact();
  api_.store().DropWatches();
  Apply(TrainingJob("three", "true"));
  ASSERT_FALSE(AwaitPhase("three", "Succeeded", 30).is_null()) << op->Output();
  EXPECT_NE(op->Output().find("is gone (410); listing again"), std::string::npos) << op->Output();
}

TEST_F(OperatorScenario, TwoReplicasOneLeaderAndTheOtherTakesOver) {
  auto a = StartOperator("op-a");
  ASSERT_TRUE(a->AwaitLine("op-a is the leader", seconds(10))) << a->Output();
  auto b = StartOperator("op-b");
  Apply(TrainingJob("fm", "true"));
  ASSERT_FALSE(AwaitPhase("fm", "Succeeded", 30).is_null()) << a->Output();
  EXPECT_EQ(b->Output().find("is the leader"), std::string::npos) << b->Output();
  EXPECT_EQ(b->Output().find("created"), std::string::npos) << b->Output();
  const Json lease = Read(kLeases, "cohort-operator").body;
  EXPECT_EQ(lease["spec"]["holderIdentity"], "op-a");
  a->Kill(SIGKILL);  // no release: op-b waits out the Lease (2 s), then leads
  ASSERT_TRUE(b->AwaitLine("op-b is the leader", seconds(10))) << b->Output();
  Apply(TrainingJob("next", "true"));
  ASSERT_FALSE(AwaitPhase("next", "Succeeded", 30).is_null()) << b->Output();
  EXPECT_EQ(Read(kLeases, "cohort-operator").body["spec"]["leaseTransitions"], 1);
}

TEST_F(OperatorScenario, AnInvalidSpecFailsWithRendersMessageAndCreatesNothing) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("bad", "true", {{"nnodes", 0}}));
  const Json failed = AwaitPhase("bad", "Failed", 10);
  ASSERT_FALSE(failed.is_null()) << op->Output();
  const Json* c = Condition(failed, "Failed");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)["reason"], "Invalid");
  EXPECT_NE((*c)["message"].get<std::string>().find("spec.nnodes"), std::string::npos)
      << (*c)["message"];
  EXPECT_EQ(Condition(failed, "Created"), nullptr);
  EXPECT_EQ(Count(kJobs, "bad"), 0);
  EXPECT_EQ(Count(kServices, "bad"), 0);
  EXPECT_EQ(Count(kSecrets, "bad"), 0);
  // Fixed, it runs.
  Apply(TrainingJob("bad", "true", {{"nnodes", 1}}));
  ASSERT_FALSE(AwaitPhase("bad", "Succeeded", 30).is_null()) << op->Output();
}

TEST_F(OperatorScenario, SuspendStopsThePodsAndResumeStartsThemAgain) {
  auto op = StartOperator("op-a");
  Apply(TrainingJob("fm", "sleep 30"));
  ASSERT_FALSE(AwaitPhase("fm", "Running", 20).is_null()) << op->Output();
  ProcessResult r = Kubectl(
      {"patch", "trainingjob", "fm", "--type", "merge", "-p", R"({"spec":{"suspend":true}})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_FALSE(AwaitPhase("fm", "Suspended", 10).is_null()) << op->Output();
  // The Job is suspended and its pods go (they would checkpoint on SIGTERM).
  EXPECT_TRUE(AwaitJob("fm", [](const Json& job) {
    return job["spec"].value("suspend", false) && job["status"].value("active", 0) == 0;
  })) << Read(kJobs, "fm").body.dump();
  r = Kubectl(
      {"patch", "trainingjob", "fm", "--type", "merge", "-p", R"({"spec":{"suspend":false}})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Json running = AwaitPhase("fm", "Running", 20);
  ASSERT_FALSE(running.is_null()) << op->Output();
  EXPECT_TRUE(AwaitJob("fm", [](const Json& job) {
    return !job["spec"].value("suspend", true) && job["status"].value("active", 0) == 2;
  })) << Read(kJobs, "fm").body.dump();
  EXPECT_EQ(running["status"]["restartCount"], 0);
}

// The real thing: Fashion-MNIST on 2 nodes x 2 workers (gloo), snapshots every 10 steps. Node
// 1's pod is SIGKILLed after the first snapshot; its Job fails, the operator recreates it as
// attempt 1, whose workers resume from the newest snapshot and train to the last step; the
// TrainingJob ends Succeeded, every step ran (none lost beyond the snapshot), and the snapshots
// verify (`cohort checkpoint verify`).
TEST_F(OperatorScenario, FashionMnistTrainsThroughAKilledPodAndSucceedsWithVerifiedSnapshots) {
  if (const std::string why = cohort::testing::FashionMnistUnavailable(); !why.empty()) {
    GTEST_SKIP() << why;
  }
  auto op = StartOperator("op-a");
  const std::string metrics = dir_.File("metrics.jsonl");
  std::vector<std::string> program = cohort::testing::FashionMnistJob(30, 10, metrics);
  const std::string checkpoints = dir_.Uri("ck");
  Apply(TrainingJob("fm", "",
                    {{"command", {program[0]}},
                     {"args", std::vector<std::string>(program.begin() + 1, program.end())},
                     {"nprocPerNode", 2},
                     {"checkpointURI", checkpoints},
                     {"maxRestarts", 1}}));
  ASSERT_TRUE(cohort::testing::AwaitStep(metrics, 12, std::chrono::seconds(90)))
      << op->Output() << PodLogs();
  const ApiResult pods = client_.List(ResourcePath(kPods, "default"),
                                      "labelSelector=batch.kubernetes.io%2Fjob-completion-index%3D1");
  ASSERT_TRUE(pods.ok() && pods.body["items"].size() == 1) << pods.body.dump(1);
  const auto pid = api_.PodPid("default", pods.body["items"][0]["metadata"]["name"]);
  ASSERT_TRUE(pid.has_value());
  ASSERT_EQ(::kill(-*pid, SIGKILL), 0);

  std::vector<std::string> phases;
  const Json done = AwaitPhase("fm", "Succeeded", 120, &phases);
  const std::string logs = PodLogs();
  ASSERT_FALSE(done.is_null()) << ::testing::PrintToString(phases) << op->Output() << logs;
  EXPECT_NE(std::find(phases.begin(), phases.end(), "Restarting"), phases.end())
      << ::testing::PrintToString(phases);
  EXPECT_EQ(done["status"]["restartCount"], 1);
  // Attempt 1 started only once attempt 0's pods had stopped: none of its pods met the old
  // store or found node 0's port still taken.
  EXPECT_EQ(logs.find("the port is in use"), std::string::npos) << logs;
  EXPECT_EQ(logs.find("rendezvous failed"), std::string::npos) << logs;
  const std::vector<int64_t> resumed = cohort::testing::ResumedFrom(logs);
  EXPECT_FALSE(resumed.empty()) << logs;
  for (int64_t r : resumed) EXPECT_GE(r, 10) << logs;  // from a snapshot, not from scratch
  EXPECT_EQ(cohort::testing::CheckSteps(cohort::testing::ReadSteps(metrics), resumed, 30, 10), "")
      << logs;
  Subprocess verify({BinPath("cohort"), "checkpoint", "verify", checkpoints + "/fm"}, {});
  const ProcessResult v = verify.Wait(seconds(60));
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_NE(v.output.find("step-000000000030"), std::string::npos) << v.output;
}

}  // namespace
}  // namespace cohort::k8s
