// cohort-operator (the process) on its MPIJob path (TrainingJob backend mpi) against the
// Kubernetes API-server double, which serves MPIJobs from the mpi-operator's own CRD (vendored:
// tests/k8s/schemas/kubeflow.org_mpijobs.yaml, so the double validates and prunes what the
// operator writes as a real API server would). There is no mpi-operator: the test plays it, as
// mpi-operator v2beta1 behaves: it writes the MPIJob's status conditions (Running, Succeeded,
// Failed, Suspended) through /status, and runs a failing attempt's launcher as the batch/v1 Job
// <name>-launcher, owned by the MPIJob, whose pod (labels training.kubeflow.org/job-name and
// job-role=launcher) the double's kubelet runs; it leaves the one-line verdict in its
// termination log and exits non-zero. Scenarios: create -> Running -> Succeeded with the
// MPIJob owned, backoffLimit 0 and COHORT_MAX_RESTARTS=0; Failed -> Restarting -> attempt 1
// (COHORT_RESTART=1, COHORT_RESUME=latest) -> Succeeded; maxRestarts exceeded -> Failed naming
// the rank (the current attempt's launcher, not a leftover pod of the same labels); delete
// cascades; suspend and resume through spec.runPolicy.suspend; the restarted launcher forwards
// the attempt's env to the ranks with mpirun -x.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>

#include "common/utc_time.h"
#include "launcher/yaml_json.h"
#include "operator/job_status.h"
#include "operator/kube_client.h"
#include "operator/owned_objects.h"
#include "tests/operator/operator_fixture.h"

namespace cohort::k8s {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::BinPath;
using testing::ProcessResult;
using testing::Subprocess;

const std::string kMpiCrd =
    std::string(COHORT_SOURCE_DIR) + "/tests/k8s/schemas/kubeflow.org_mpijobs.yaml";
const char kJobNameLabel[] = "training.kubeflow.org/job-name";
const char kJobRoleLabel[] = "training.kubeflow.org/job-role";

// A TrainingJob, backend mpi, 2 nodes x 2 processes, maxRestarts 1 (the program never runs:
// there is no mpi-operator to start it).
Json MpiTrainingJob(const std::string& name) {
  return {{"apiVersion", "cohort.dev/v1alpha1"},
          {"kind", "TrainingJob"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"image", "cohort-train:0.1.0"},
            {"command", {"/bin/sh", "-c", "true"}},
            {"nnodes", 2},
            {"nprocPerNode", 2},
            {"backend", "mpi"},
            {"maxRestarts", 1}}}};
}

// A launcher that fails as `cohort launch` does under mpirun: the verdict, then the exit code.
std::string FailingLauncher(int rank, int node, int code) {
  return "echo \"failed: rank " + std::to_string(rank) + " on node " + std::to_string(node) +
         " exited with code " + std::to_string(code) + "\" > \"$COHORT_TERMINATION_LOG\"; exit " +
         std::to_string(code);
}

class OperatorMpiJob : public testing::OperatorFixture {
 protected:
  OperatorMpiJob() : OperatorFixture("operator-mpi") {}

  // The TrainingJob CRD (OperatorFixture), the mpi-operator's, and the operator.
  void SetUp() override {
    OperatorFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // The mpi-operator's CRD, 650 KiB: over kubectl apply's annotation limit, so POSTed.
    std::stringstream text;
    text << std::ifstream(kMpiCrd).rdbuf();
    const ApiResult crd = client_.Create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                         launcher::YamlToJson(text.str(), kMpiCrd));
    ASSERT_EQ(crd.status, 201) << crd.Message();
    op_ = StartOperator("op-a");
  }

  void ApplyTrainingJob(const std::string& name) { Apply(MpiTrainingJob(name)); }

  // The MPIJob of attempt `attempt` (null on timeout).
  Json AwaitAttempt(const std::string& name, int attempt) {
    return Await(kMpiJobs, name, [&](const Json& m) {
      return m["metadata"].value("annotations", Json::object()).value(kAttemptAnnotation, "") ==
             std::to_string(attempt);
    });
  }

  // Plays the mpi-operator: condition `type` set to `value` on the MPIJob through /status
  // (reason, message, lastTransitionTime, lastUpdateTime); a True Succeeded, Failed or Suspended
  // sets Running False, as its updateMPIJobConditions does. Returns the PUT's status code.
  long Mark(const std::string& name, const std::string& type, const std::string& reason,
            const std::string& message, bool value = true, const Json& replicas = nullptr) {
    for (int attempt = 0; attempt < 20; ++attempt) {
      Json m = Read(kMpiJobs, name).body;
      Json& status = m["status"];
      if (!status.contains("conditions")) status["conditions"] = Json::array();
      const std::string now = UtcNowRfc3339();
      Json& conditions = status["conditions"];
      auto find = [&](const std::string& t) {
        return std::find_if(conditions.begin(), conditions.end(),
                            [&](const Json& x) { return x["type"] == t; });
      };
      auto set = [&](const std::string& t, bool v, const std::string& why, const std::string& msg) {
        Json c = {{"type", t},      {"status", v ? "True" : "False"}, {"reason", why},
                  {"message", msg}, {"lastTransitionTime", now},      {"lastUpdateTime", now}};
        auto it = find(t);
        if (it == conditions.end()) {
          conditions.push_back(std::move(c));
        } else {
          *it = std::move(c);
        }
      };
      set(type, value, reason, message);
      if (value && type != "Running" && find("Running") != conditions.end())
        set("Running", false, reason, message);
      if (!replicas.is_null()) status["replicaStatuses"] = replicas;
      const ApiResult r = client_.UpdateStatus(ResourcePath(kMpiJobs, "default", name), m);
      if (r.status != 409) return r.status;
    }
    return 409;
  }

  long MarkRunning(const std::string& name) {
    return Mark(name, "Running", "MPIJobRunning", "MPIJob default/" + name + " is running.", true,
                {{"Launcher", {{"active", 1}}}, {"Worker", {{"active", 2}}}});
  }

  // Plays the mpi-operator's failed attempt: the launcher Job <name>-launcher (owned by the
  // MPIJob, backoffLimit 0) runs `script` in the double, and once the Job has failed the
  // MPIJob's Failed condition says what the mpi-operator says then.
  void FailAttempt(const std::string& name, const std::string& script) {
    const Json mpijob = Read(kMpiJobs, name).body;
    const Json labels = {{kJobNameLabel, name},
                         {kJobRoleLabel, "launcher"},
                         {"training.kubeflow.org/operator-name", "mpi-operator"}};
    const Json job = {{"apiVersion", "batch/v1"},
                      {"kind", "Job"},
                      {"metadata",
                       {{"name", name + "-launcher"},
                        {"namespace", "default"},
                        {"labels", labels},
                        {"ownerReferences",
                         {{{"apiVersion", "kubeflow.org/v2beta1"},
                           {"kind", "MPIJob"},
                           {"name", name},
                           {"uid", mpijob["metadata"]["uid"]},
                           {"controller", true},
                           {"blockOwnerDeletion", true}}}}}},
                      {"spec",
                       {{"backoffLimit", 0},
                        {"template",
                         {{"metadata", {{"labels", labels}}},
                          {"spec",
                           {{"restartPolicy", "Never"},
                            {"containers",
                             {{{"name", "mpi-launcher"},
                               {"image", "cohort-train:0.1.0"},
                               {"command", {"/bin/sh", "-c", script}}}}}}}}}}}};
    const ApiResult made = client_.Create(ResourcePath(kJobs, "default"), job);
    ASSERT_EQ(made.status, 201) << made.Message();
    const Json failed = Await(kJobs, name + "-launcher", [](const Json& j) {
      for (const Json& c : j.value("status", Json::object()).value("conditions", Json::array()))
        if (c["type"] == "Failed" && c["status"] == "True") return true;
      return false;
    });
    ASSERT_FALSE(failed.is_null()) << Read(kJobs, name + "-launcher").body.dump();
    ASSERT_EQ(Mark(name, "Failed", "BackoffLimitExceeded/",
                   "Job has reached the specified backoff limit: "),
              200);
  }

  // name=value of a container's env ("" when absent; "<from NAME>" for a secretKeyRef).
  static std::string EnvOf(const Json& container, const std::string& name) {
    for (const Json& e : container.value("env", Json::array())) {
      if (e["name"] != name) continue;
      if (e.contains("valueFrom") && e["valueFrom"].contains("secretKeyRef"))
        return "<from " + e["valueFrom"]["secretKeyRef"].value("name", "") + ">";
      return e.value("value", "");
    }
    return "";
  }

  static std::vector<Json> Containers(const Json& mpijob) {
    std::vector<Json> out;
    for (const auto& [role, replica] : mpijob["spec"]["mpiReplicaSpecs"].items())
      for (const Json& c : replica["template"]["spec"]["containers"]) out.push_back(c);
    return out;
  }

  std::unique_ptr<Subprocess> op_;
};

TEST_F(OperatorMpiJob, CreatesAnOwnedMpiJobThenRunningThenSucceeded) {
  ApplyTrainingJob("fm");
  const Json created = AwaitPhase("fm", "Created");
  ASSERT_FALSE(created.is_null()) << op_->Output();
  const Json mpijob = AwaitAttempt("fm", 0);
  ASSERT_FALSE(mpijob.is_null()) << op_->Output();
  const Json& ref = mpijob["metadata"]["ownerReferences"][0];
  EXPECT_EQ(ref["kind"], "TrainingJob");
  EXPECT_EQ(ref["uid"], created["metadata"]["uid"]);
  EXPECT_EQ(ref["controller"], true);
  EXPECT_EQ(ref["blockOwnerDeletion"], true);
  EXPECT_EQ(mpijob["metadata"]["labels"][kOwnerLabel], "fm");
  EXPECT_EQ(mpijob["spec"]["runPolicy"]["backoffLimit"], 0);  // the operator restarts, not it
  EXPECT_EQ(mpijob["spec"]["slotsPerWorker"], 2);
  EXPECT_EQ(mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"], 2);
  const Json& launcher = mpijob["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"];
  EXPECT_EQ(EnvOf(launcher["containers"][0], "COHORT_TOKEN"), "<from fm-token>");
  ASSERT_EQ(Containers(mpijob).size(), 2u);
  for (const Json& c : Containers(mpijob)) {
    EXPECT_EQ(EnvOf(c, "COHORT_MAX_RESTARTS"), "0") << c.dump();
    EXPECT_EQ(EnvOf(c, "COHORT_RESTART"), "") << c.dump();
    EXPECT_EQ(EnvOf(c, "COHORT_RESUME"), "") << c.dump();
  }
  const ApiResult secret = Read(kSecrets, "fm-token");
  ASSERT_TRUE(secret.ok()) << secret.Message();
  EXPECT_EQ(secret.body["metadata"]["ownerReferences"][0]["uid"], created["metadata"]["uid"]);
  EXPECT_EQ(secret.body["data"].value("token", "").size(), 44u);  // base64 of 32 hex digits
  EXPECT_EQ(Count(kMpiJobs, "fm"), 1);

  ASSERT_EQ(MarkRunning("fm"), 200);
  const Json running = AwaitPhase("fm", "Running");
  ASSERT_FALSE(running.is_null()) << op_->Output();
  EXPECT_EQ((*Condition(running, "Running"))["message"], "3 of 3 pod(s) running");
  ASSERT_EQ(Mark("fm", "Succeeded", "MPIJobSucceeded", "MPIJob default/fm successfully completed."),
            200);
  const Json done = AwaitPhase("fm", "Succeeded");
  ASSERT_FALSE(done.is_null()) << op_->Output();
  EXPECT_EQ(done["status"]["restartCount"], 0);
  EXPECT_EQ((*Condition(done, "Succeeded"))["status"], "True");
  EXPECT_EQ((*Condition(done, "Running"))["status"], "False");
  EXPECT_EQ(Read(kMpiJobs, "fm").body["metadata"]["uid"], mpijob["metadata"]["uid"]);
  op_->Kill(SIGTERM);
  EXPECT_EQ(op_->Wait(seconds(10)).exit_code, 0) << op_->Output();
}

TEST_F(OperatorMpiJob, AFailedMpiJobRestartsAsAttemptOneThenSucceeds) {
  ApplyTrainingJob("fm");
  const Json first = AwaitAttempt("fm", 0);
  ASSERT_FALSE(first.is_null()) << op_->Output();
  ASSERT_EQ(MarkRunning("fm"), 200);
  ASSERT_FALSE(AwaitPhase("fm", "Running").is_null()) << op_->Output();
  std::vector<std::string> phases;
  ASSERT_NO_FATAL_FAILURE(FailAttempt("fm", FailingLauncher(3, 1, 7)));
  const Json second = AwaitAttempt("fm", 1);
  ASSERT_FALSE(second.is_null()) << op_->Output();
  EXPECT_NE(second["metadata"]["uid"], first["metadata"]["uid"]);  // deleted and created again
  const Json restarting = AwaitPhase("fm", "Restarting", 10, &phases);
  ASSERT_FALSE(restarting.is_null()) << ::testing::PrintToString(phases) << op_->Output();
  EXPECT_EQ(restarting["status"]["restartCount"], 1);
  const std::string why = (*Condition(restarting, "Restarting"))["message"];
  EXPECT_NE(why.find("rank 3 on node 1 exited with code 7"), std::string::npos) << why;
  EXPECT_NE(why.find("restart 1 of 1"), std::string::npos) << why;
  EXPECT_EQ(second["metadata"]["ownerReferences"][0]["uid"], restarting["metadata"]["uid"]);
  EXPECT_EQ(second["spec"]["runPolicy"]["backoffLimit"], 0);
  for (const Json& c : Containers(second)) {
    EXPECT_EQ(EnvOf(c, "COHORT_RESTART"), "1") << c.dump();
    EXPECT_EQ(EnvOf(c, "COHORT_RESUME"), "latest") << c.dump();
    EXPECT_EQ(EnvOf(c, "COHORT_MAX_RESTARTS"), "0") << c.dump();
  }
  EXPECT_EQ(Read(kJobs, "fm-launcher").status, 404);  // attempt 0's launcher went with it
  EXPECT_EQ(Count(kMpiJobs, "fm"), 1);

  ASSERT_EQ(MarkRunning("fm"), 200);
  ASSERT_FALSE(AwaitPhase("fm", "Running", 10, &phases).is_null()) << op_->Output();
  ASSERT_EQ(Mark("fm", "Succeeded", "MPIJobSucceeded", "MPIJob default/fm successfully completed."),
            200);
  const Json done = AwaitPhase("fm", "Succeeded", 10, &phases);
  ASSERT_FALSE(done.is_null()) << ::testing::PrintToString(phases) << op_->Output();
  EXPECT_EQ(done["status"]["restartCount"], 1);
  EXPECT_EQ((*Condition(done, "Succeeded"))["message"], "finished after 1 restart(s)");
  EXPECT_EQ(AwaitAttempt("fm", 1)["metadata"]["uid"], second["metadata"]["uid"]);
}

TEST_F(OperatorMpiJob, MaxRestartsExceededFailsNamingTheCurrentAttemptsRank) {
  ApplyTrainingJob("fm");
  ASSERT_FALSE(AwaitAttempt("fm", 0).is_null()) << op_->Output();
  ASSERT_NO_FATAL_FAILURE(FailAttempt("fm", FailingLauncher(3, 1, 7)));
  const Json second = AwaitAttempt("fm", 1);
  ASSERT_FALSE(second.is_null()) << op_->Output();
  // A launcher pod of the same labels whose Job is gone (one the garbage collector has not
  // removed yet): its verdict is an older attempt's, and must not be taken for this one's. Its
  // name sorts before the launcher Job's pods.
  const Json stale = {{"apiVersion", "v1"},
                      {"kind", "Pod"},
                      {"metadata",
                       {{"name", "fm-launcher-00000"},
                        {"labels", {{kJobNameLabel, "fm"}, {kJobRoleLabel, "launcher"}}},
                        {"ownerReferences",
                         {{{"apiVersion", "batch/v1"},
                           {"kind", "Job"},
                           {"name", "fm-launcher"},
                           {"uid", "00000000-0000-0000-0000-000000000000"},
                           {"controller", true}}}}}},
                      {"spec",
                       {{"restartPolicy", "Never"},
                        {"containers",
                         {{{"name", "mpi-launcher"},
                           {"image", "cohort-train:0.1.0"},
                           {"command", {"/bin/sh", "-c", FailingLauncher(0, 0, 9)}}}}}}}};
  ASSERT_EQ(client_.Create(ResourcePath(kPods, "default"), stale).status, 201);
  ASSERT_FALSE(Await(kPods, "fm-launcher-00000", [](const Json& p) {
                 return p.value("status", Json::object()).value("phase", "") == "Failed";
               }).is_null());
  ASSERT_NO_FATAL_FAILURE(FailAttempt("fm", FailingLauncher(2, 1, 5)));
  const Json failed = AwaitPhase("fm", "Failed");
  ASSERT_FALSE(failed.is_null()) << op_->Output();
  EXPECT_EQ(failed["status"]["restartCount"], 1);
  const Json* c = Condition(failed, "Failed");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)["reason"], "RestartsExhausted");
  const std::string message = (*c)["message"];
  EXPECT_NE(message.find("rank 2 on node 1 exited with code 5"), std::string::npos) << message;
  EXPECT_NE(message.find("after 1 restart"), std::string::npos) << message;
  EXPECT_EQ(message.find("rank 0"), std::string::npos) << message;
  std::this_thread::sleep_for(milliseconds(1000));  // several resyncs: no attempt 2
  const ApiResult now = Read(kMpiJobs, "fm");
  ASSERT_TRUE(now.ok()) << now.Message();
  EXPECT_EQ(now.body["metadata"]["uid"], second["metadata"]["uid"]);
  EXPECT_EQ(now.body["metadata"]["annotations"][kAttemptAnnotation], "1");
  EXPECT_EQ(Count(kMpiJobs, "fm"), 1);
}

TEST_F(OperatorMpiJob, DeletingTheTrainingJobDeletesTheMpiJob) {
  ApplyTrainingJob("fm");
  ASSERT_FALSE(AwaitAttempt("fm", 0).is_null()) << op_->Output();
  ASSERT_EQ(MarkRunning("fm"), 200);
  ASSERT_FALSE(AwaitPhase("fm", "Running").is_null()) << op_->Output();
  const ProcessResult r = Kubectl({"delete", "trainingjob", "fm", "--wait=false"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         (Read(kMpiJobs, "fm").ok() || Read(kSecrets, "fm-token").ok()))
    std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(Read(kMpiJobs, "fm").status, 404);
  EXPECT_EQ(Read(kSecrets, "fm-token").status, 404);
  std::this_thread::sleep_for(milliseconds(1000));  // and the operator does not bring it back
  EXPECT_EQ(Read(kMpiJobs, "fm").status, 404);
  EXPECT_EQ(Read(kTrainingJobs, "fm").status, 404);
}

TEST_F(OperatorMpiJob, SuspendAndResumeGoThroughRunPolicySuspend) {
  ApplyTrainingJob("fm");
  ASSERT_FALSE(AwaitAttempt("fm", 0).is_null()) << op_->Output();
  ASSERT_EQ(MarkRunning("fm"), 200);
  ASSERT_FALSE(AwaitPhase("fm", "Running").is_null()) << op_->Output();
  ProcessResult r = Kubectl(
      {"patch", "trainingjob", "fm", "--type", "merge", "-p", R"({"spec":{"suspend":true}})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto suspended = [](bool on) {
    return [on](const Json& m) {
      return m["spec"].value("runPolicy", Json::object()).value("suspend", false) == on;
    };
  };
  ASSERT_FALSE(Await(kMpiJobs, "fm", suspended(true)).is_null())
      << Read(kMpiJobs, "fm").body.dump() << op_->Output();
  ASSERT_EQ(Mark("fm", "Suspended", "MPIJobSuspended", "MPIJob suspended"), 200);
  ASSERT_FALSE(AwaitPhase("fm", "Suspended").is_null()) << op_->Output();
  r = Kubectl(
      {"patch", "trainingjob", "fm", "--type", "merge", "-p", R"({"spec":{"suspend":false}})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_FALSE(Await(kMpiJobs, "fm", suspended(false)).is_null())
      << Read(kMpiJobs, "fm").body.dump() << op_->Output();
  ASSERT_EQ(Mark("fm", "Suspended", "MPIJobResumed", "MPIJob resumed", false), 200);
  ASSERT_EQ(MarkRunning("fm"), 200);
  const Json running = AwaitPhase("fm", "Running");
  ASSERT_FALSE(running.is_null()) << op_->Output();
  EXPECT_EQ(running["status"]["restartCount"], 0);
  EXPECT_FALSE(AwaitAttempt("fm", 0).is_null());  // the same attempt, not a restart
}

// The ranks are started by mpirun over SSH and see only what mpirun -x forwards from the
// launcher's env (render_mpi.cc): an attempt's COHORT_RESTART, COHORT_RESUME and
// COHORT_MAX_RESTARTS reach them only if the launcher's command forwards them too.
TEST(OperatorMpiJobObjects, TheRestartedLauncherForwardsTheAttemptToTheRanks) {
  Json tj = MpiTrainingJob("fm");
  tj["metadata"]["uid"] = "u-1";
  const Json worker = DesiredObjects(tj, std::string(32, 'a'), 1).worker;
  const Json& container =
      worker["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0];
  const Json& command = container["command"];
  ASSERT_EQ(command[0], "mpirun");
  for (const char* name : {"COHORT_RESTART", "COHORT_RESUME", "COHORT_MAX_RESTARTS"}) {
    bool forwarded = false;
    for (size_t i = 0; i + 1 < command.size(); ++i)
      forwarded = forwarded || (command[i] == "-x" && command[i + 1] == name);
    EXPECT_TRUE(forwarded) << name << " is in the launcher's env but mpirun does not forward it "
                           << "(no -x " << name << "): " << command.dump();
  }
}

}  // namespace
}  // namespace cohort::k8s
