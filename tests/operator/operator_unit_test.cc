// cohort-operator's pure logic, no server: kubeconfig and in-cluster config, what a Job's and
// its pods' status mean, the restart / suspend / final decisions, the status written, the owned
// objects (render output with owner references and the attempt's env) and the Lease decisions.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/base64.h"
#include "common/error.h"
#include "common/utc_time.h"
#include "operator/job_status.h"
#include "operator/kube_config.h"
#include "operator/leader.h"
#include "operator/owned_objects.h"

namespace cohort::k8s {
namespace {

namespace fs = std::filesystem;

std::string TempDir() {
  std::string dir = fs::temp_directory_path() / "cohort-operator-unit-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) throw std::runtime_error("mkdtemp");
  return dir;
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string Kubeconfig(const std::string& user) {
  return "apiVersion: v1\nkind: Config\ncurrent-context: ctx\n"
         "clusters:\n- name: c1\n  cluster:\n    server: https://10.0.0.1:6443/\n"
         "    certificate-authority-data: " +
         Base64Encode("CA PEM") +
         "\n"
         "- name: c2\n  cluster:\n    server: http://127.0.0.1:8080\n"
         "    insecure-skip-tls-verify: true\n"
         "contexts:\n- name: ctx\n  context: {cluster: c1, user: u1, namespace: ml}\n"
         "- name: other\n  context: {cluster: c2, user: u1}\n"
         "users:\n- name: u1\n  user:\n" +
         user;
}

TEST(KubeconfigTest, TokenUserAndCaData) {
  const KubeConfig c = ParseKubeconfig(Kubeconfig("    token: abc123\n"), "kc", "/etc");
  EXPECT_EQ(c.server, "https://10.0.0.1:6443");
  EXPECT_EQ(c.token, "abc123");
  EXPECT_EQ(c.tls.ca_pem, "CA PEM");
  EXPECT_FALSE(c.tls.insecure_skip_verify);
  EXPECT_EQ(c.ns, "ml");
  EXPECT_EQ(c.source, "kubeconfig kc context ctx");
}

TEST(KubeconfigTest, ClientCertificateDataAndAnotherContext) {
  const std::string user = "    client-certificate-data: " + Base64Encode("CERT") +
                           "\n    client-key-data: " + Base64Encode("KEY") + "\n";
  const KubeConfig c = ParseKubeconfig(Kubeconfig(user), "kc", "/etc", "other");
  EXPECT_EQ(c.server, "http://127.0.0.1:8080");
  EXPECT_EQ(c.tls.cert_pem, "CERT");
  EXPECT_EQ(c.tls.key_pem, "KEY");
  EXPECT_TRUE(c.token.empty());
  EXPECT_TRUE(c.tls.insecure_skip_verify);
  EXPECT_EQ(c.ns, "default");
}

TEST(KubeconfigTest, FilesAreRelativeToTheKubeconfig) {
  const std::string dir = TempDir();
  Write(dir + "/token", "from-file\n");
  Write(
      dir + "/config",
      Kubeconfig("    tokenFile: token\n    client-certificate: c.crt\n    client-key: /k.key\n"));
  const KubeConfig c = LoadKubeconfig(dir + "/config");
  EXPECT_EQ(c.token, "from-file");
  EXPECT_EQ(c.tls.cert_file, dir + "/c.crt");
  EXPECT_EQ(c.tls.key_file, "/k.key");
  fs::remove_all(dir);
}

TEST(KubeconfigTest, BadOnesSayWhatIsWrong) {
  auto message = [](const std::string& text, const std::string& context = "") {
    try {
      ParseKubeconfig(text, "kc", "/", context);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(Kubeconfig("    token: t\n"), "nope").find("no context named 'nope'"),
            std::string::npos);
  EXPECT_NE(message(Kubeconfig("    client-certificate-data: " + Base64Encode("C") + "\n"))
                .find("without its key"),
            std::string::npos);
  EXPECT_NE(message(Kubeconfig("    exec: {command: aws}\n")).find("'exec' is not supported"),
            std::string::npos);
  EXPECT_NE(message(Kubeconfig("    client-certificate-data: '%%%'\n    client-key-data: a\n"))
                .find("client-certificate-data is not base64"),
            std::string::npos);
  EXPECT_NE(message("apiVersion: v1\nkind: Config\n").find("no current-context"),
            std::string::npos);
  EXPECT_THROW(LoadKubeconfig("/nonexistent/kubeconfig"), InvalidArgument);
}

TEST(InClusterTest, ServiceAccountFilesAndServiceEnv) {
  const std::string dir = TempDir();
  Write(dir + "/token", "sa-token\n");
  Write(dir + "/namespace", "cohort-system");
  const KubeConfig c = InClusterConfig(dir, "10.96.0.1", "443");
  EXPECT_EQ(c.server, "https://10.96.0.1:443");
  EXPECT_EQ(c.token, "sa-token");
  EXPECT_EQ(c.tls.ca_file, dir + "/ca.crt");
  EXPECT_EQ(c.ns, "cohort-system");
  EXPECT_EQ(InClusterConfig(dir, "fd00::1", "6443").server, "https://[fd00::1]:6443");
  EXPECT_THROW(InClusterConfig(dir, "", ""), InvalidArgument);
  fs::remove(dir + "/token");
  EXPECT_THROW(InClusterConfig(dir, "10.96.0.1", "443"), InvalidArgument);
  fs::remove_all(dir);
}

Json JobWith(const Json& conditions, int active = 0, const std::string& attempt = "") {
  Json job = {{"metadata", {{"name", "fm"}}},
              {"spec", {{"completions", 2}}},
              {"status", {{"active", active}, {"conditions", conditions}}}};
  if (!attempt.empty()) job["metadata"]["annotations"][kAttemptAnnotation] = attempt;
  return job;
}

TEST(ObserveJobTest, ConditionsAndCounts) {
  EXPECT_EQ(ObserveJob(nullptr).state, JobState::kMissing);
  EXPECT_EQ(ObserveJob(JobWith(Json::array())).state, JobState::kPending);
  const JobObservation running = ObserveJob(JobWith(Json::array(), 2, "3"));
  EXPECT_EQ(running.state, JobState::kRunning);
  EXPECT_EQ(running.active, 2);
  EXPECT_EQ(running.pods, 2);
  EXPECT_EQ(running.attempt, 3);
  EXPECT_EQ(ObserveJob(JobWith({{{"type", "Complete"}, {"status", "True"}}})).state,
            JobState::kSucceeded);
  EXPECT_EQ(ObserveJob(JobWith({{{"type", "Complete"}, {"status", "False"}}}, 1)).state,
            JobState::kRunning);
  const JobObservation failed = ObserveJob(JobWith({{{"type", "Failed"},
                                                     {"status", "True"},
                                                     {"reason", "PodFailurePolicy"},
                                                     {"message", "m"}}}));
  EXPECT_EQ(failed.state, JobState::kFailed);
  EXPECT_EQ(failed.reason, "PodFailurePolicy");
  EXPECT_EQ(ObserveJob(JobWith({{{"type", "Suspended"}, {"status", "True"}}})).state,
            JobState::kSuspended);
  Json deleting = JobWith(Json::array(), 2);
  deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
  EXPECT_EQ(ObserveJob(deleting).state, JobState::kDeleting);
}

Json Pod(int index, int code, const std::string& message) {
  Json terminated = {{"exitCode", code}, {"reason", code ? "Error" : "Completed"}};
  if (!message.empty()) terminated["message"] = message;
  return {
      {"metadata",
       {{"name", "fm-" + std::to_string(index)},
        {"annotations", {{"batch.kubernetes.io/job-completion-index", std::to_string(index)}}}}},
      {"status", {{"containerStatuses", {{{"state", {{"terminated", terminated}}}}}}}}};
}

TEST(FailureVerdictTest, TheFirstFailedPodsTerminationMessage) {
  const Json pods = {{"items",
                      {Pod(1, 1, "rank 2 on node 1 exited with code 7\n"), Pod(0, 0, ""),
                       Pod(2, 1, "rank 4 on node 2 lost")}}};
  EXPECT_EQ(FailureVerdict(pods), "rank 2 on node 1 exited with code 7");
  EXPECT_EQ(FailureVerdict({{"items", {Pod(0, 137, "")}}}),
            "pod fm-0 exited with code 137 (Error)");
  EXPECT_EQ(FailureVerdict({{"items", {Pod(0, 0, "done")}}}), "");
  EXPECT_EQ(FailureVerdict({{"items", Json::array()}}), "");
}

JobObservation Seen(JobState state, int attempt = 0) {
  JobObservation o;
  o.state = state;
  o.attempt = attempt;
  o.active = 2;
  o.pods = 2;
  return o;
}

TEST(DecideTest, CreateRunSucceed) {
  Decision d = Decide(nullptr, Seen(JobState::kMissing), 2, false, "");
  EXPECT_EQ(d.action, Action::kCreate);
  EXPECT_EQ(d.phase, "Created");
  d = Decide({{"phase", "Created"}}, Seen(JobState::kRunning), 2, false, "");
  EXPECT_EQ(d.action, Action::kNone);
  EXPECT_EQ(d.phase, "Running");
  EXPECT_EQ(d.message, "2 of 2 pod(s) running");
  d = Decide({{"phase", "Running"}}, Seen(JobState::kSucceeded), 2, false, "");
  EXPECT_EQ(d.phase, "Succeeded");
}

TEST(DecideTest, FailureRestartsThenFailsNamingTheRank) {
  const std::string verdict = "rank 2 on node 0 exited with code 7";
  Decision d = Decide({{"phase", "Running"}, {"restartCount", 0}}, Seen(JobState::kFailed), 2,
                      false, verdict);
  EXPECT_EQ(d.action, Action::kRecreate);
  EXPECT_EQ(d.phase, "Restarting");
  EXPECT_EQ(d.restart_count, 1);
  EXPECT_EQ(d.message, verdict + "; restart 1 of 2 from the latest snapshot");
  d = Decide({{"phase", "Running"}, {"restartCount", 2}}, Seen(JobState::kFailed, 2), 2, false,
             verdict);
  EXPECT_EQ(d.action, Action::kNone);
  EXPECT_EQ(d.phase, "Failed");
  EXPECT_EQ(d.reason, "RestartsExhausted");
  EXPECT_EQ(d.message, verdict + " (after 2 restart(s))");
  d = Decide(nullptr, Seen(JobState::kFailed), -1, false, "");
  EXPECT_EQ(d.phase, "Failed");
  EXPECT_EQ(d.reason, "RankFailed");
}

TEST(DecideTest, AnOlderAttemptIsReplacedAndADeletingOneAwaited) {
  // The operator recorded restart 1 and died before it replaced attempt 0.
  Decision d = Decide({{"phase", "Restarting"}, {"restartCount", 1}}, Seen(JobState::kRunning, 0),
                      3, false, "");
  EXPECT_EQ(d.action, Action::kRecreate);
  EXPECT_EQ(d.restart_count, 1);
  d = Decide({{"phase", "Restarting"}, {"restartCount", 1}}, Seen(JobState::kDeleting, 0), 3, false,
             "");
  EXPECT_EQ(d.action, Action::kNone);
  EXPECT_EQ(d.phase, "Restarting");
  d = Decide({{"phase", "Restarting"}, {"restartCount", 1}}, Seen(JobState::kMissing), 3, false,
             "");
  EXPECT_EQ(d.action, Action::kCreate);
  EXPECT_EQ(d.phase, "Restarting");
}

TEST(DecideTest, SuspendAndResume) {
  Decision d = Decide({{"phase", "Running"}}, Seen(JobState::kRunning), 0, true, "");
  EXPECT_EQ(d.action, Action::kSuspend);
  EXPECT_EQ(d.phase, "Suspended");
  d = Decide({{"phase", "Suspended"}}, Seen(JobState::kSuspended), 0, true, "");
  EXPECT_EQ(d.action, Action::kNone);
  d = Decide({{"phase", "Suspended"}}, Seen(JobState::kSuspended), 0, false, "");
  EXPECT_EQ(d.action, Action::kResume);
  EXPECT_EQ(d.phase, "Running");
}

TEST(StatusTest, ConditionsFollowThePhase) {
  Json s = NextStatus(nullptr, Decide(nullptr, Seen(JobState::kMissing), 1, false, ""), 1, "t0");
  EXPECT_EQ(s["phase"], "Created");
  ASSERT_EQ(s["conditions"].size(), 1u);
  EXPECT_EQ(s["conditions"][0]["type"], "Created");
  EXPECT_EQ(s["conditions"][0]["lastTransitionTime"], "t0");
  s = NextStatus(s, Decide(s, Seen(JobState::kRunning), 1, false, ""), 1, "t1");
  ASSERT_EQ(s["conditions"].size(), 2u);
  EXPECT_EQ(s["conditions"][0]["lastTransitionTime"], "t0");  // Created did not change
  EXPECT_EQ(s["conditions"][1]["type"], "Running");
  EXPECT_EQ(s["conditions"][1]["status"], "True");
  s = NextStatus(s, Decide(s, Seen(JobState::kFailed), 1, false, "rank 1 lost"), 2, "t2");
  EXPECT_EQ(s["phase"], "Restarting");
  EXPECT_EQ(s["restartCount"], 1);
  EXPECT_EQ(s["observedGeneration"], 2);
  EXPECT_EQ(s["conditions"][1]["status"], "False");
  EXPECT_EQ(s["conditions"][1]["lastTransitionTime"], "t2");
  EXPECT_EQ(s["conditions"][2]["type"], "Restarting");
  EXPECT_EQ(s["conditions"][2]["reason"], "RankFailed");
  const Json again = NextStatus(s, Decide(s, Seen(JobState::kPending, 1), 1, false, ""), 2, "t3");
  EXPECT_EQ(again["conditions"][2]["lastTransitionTime"], "t2");  // still Restarting
  EXPECT_FALSE(IsFinal(s, 2));
}

TEST(StatusTest, InvalidIsFinalUntilTheSpecChanges) {
  const Json s = NextStatus(nullptr, InvalidSpec("spec.nnodes: 0 is not a node count"), 3, "t");
  EXPECT_EQ(s["phase"], "Failed");
  ASSERT_EQ(s["conditions"].size(), 1u);  // nothing was created
  EXPECT_EQ(s["conditions"][0]["type"], "Failed");
  EXPECT_EQ(s["conditions"][0]["reason"], "Invalid");
  EXPECT_TRUE(IsFinal(s, 3));
  EXPECT_FALSE(IsFinal(s, 4));
  EXPECT_TRUE(IsFinal({{"phase", "Succeeded"}}, 9));
}

Json TrainingJob(const std::string& backend = "gloo") {
  return {{"apiVersion", "cohort.dev/v1alpha1"},
          {"kind", "TrainingJob"},
          {"metadata",
           {{"name", "fm"},
            {"namespace", "ml"},
            {"uid", "u-1"},
            {"resourceVersion", "7"},
            {"generation", 1},
            {"managedFields", Json::array()}}},
          {"spec",
           {{"image", "img"},
            {"command", {"/bin/train"}},
            {"nnodes", 2},
            {"backend", backend},
            {"maxRestarts", 2},
            {"psServers", backend == "ps" ? 1 : 0}}},
          {"status", {{"phase", "Running"}}}};
}

TEST(OwnedObjectsTest, RenderOutputOwnedByTheTrainingJob) {
  const OwnedObjects o = DesiredObjects(TrainingJob("ps"), "tok", 0);
  EXPECT_EQ(o.secret["kind"], "Secret");
  EXPECT_EQ(o.secret["stringData"]["token"], "tok");
  ASSERT_EQ(o.supporting.size(), 3u);  // two Services and the ps Job
  EXPECT_EQ(o.worker["kind"], "Job");
  EXPECT_EQ(o.worker["metadata"]["annotations"][kAttemptAnnotation], "0");
  for (const Json* object : {&o.secret, &o.worker, &o.supporting[0], &o.supporting[2]}) {
    const Json& meta = (*object)["metadata"];
    EXPECT_EQ(meta["namespace"], "ml");
    EXPECT_EQ(meta["labels"][kOwnerLabel], "fm");
    ASSERT_EQ(meta["ownerReferences"].size(), 1u);
    const Json& ref = meta["ownerReferences"][0];
    EXPECT_EQ(ref["uid"], "u-1");
    EXPECT_EQ(ref["kind"], "TrainingJob");
    EXPECT_EQ(ref["controller"], true);
    EXPECT_EQ(ref["blockOwnerDeletion"], true);
  }
  for (const Json& e : o.worker["spec"]["template"]["spec"]["containers"][0]["env"])
    EXPECT_NE(e["name"], "COHORT_RESTART");
}

TEST(OwnedObjectsTest, ARestartResumesFromLatest) {
  Json tj = TrainingJob();
  tj["spec"]["env"] = {{{"name", "COHORT_RESUME"}, {"value", "s3://b/old"}}};
  const OwnedObjects o = DesiredObjects(tj, "tok", 2);
  EXPECT_EQ(o.worker["metadata"]["annotations"][kAttemptAnnotation], "2");
  std::map<std::string, std::string> env;
  int resumes = 0;
  for (const Json& e : o.worker["spec"]["template"]["spec"]["containers"][0]["env"]) {
    if (e.contains("value")) env[e["name"]] = e["value"];
    resumes += e["name"] == "COHORT_RESUME";
  }
  EXPECT_EQ(env["COHORT_RESTART"], "2");
  EXPECT_EQ(env["COHORT_RESUME"], "latest");
  EXPECT_EQ(resumes, 1);
}

// The value of env `name` in the worker Job's training container ("" when absent).
std::string WorkerEnv(const OwnedObjects& o, const std::string& name) {
  for (const Json& e : o.worker["spec"]["template"]["spec"]["containers"][0]["env"])
    if (e["name"] == name) return e.value("value", "");
  return "";
}

TEST(OwnedObjectsTest, WithSnapshotsTheFirstAttemptResumesTooForASuspension) {
  // A suspended Job's pods come back with the template they had: to go on from the snapshot
  // their SIGTERM saved, attempt 0 resumes from latest too (nothing there yet: a fresh start).
  Json tj = TrainingJob();
  EXPECT_EQ(WorkerEnv(DesiredObjects(tj, "tok", 0), "COHORT_RESUME"), "");
  tj["spec"]["checkpointURI"] = "s3://b/ck";
  EXPECT_EQ(WorkerEnv(DesiredObjects(tj, "tok", 0), "COHORT_RESUME"), "latest");
  tj["spec"]["env"] = {{{"name", "COHORT_RESUME"}, {"value", "s3://b/ck/fm/step-000000000100"}}};
  EXPECT_EQ(WorkerEnv(DesiredObjects(tj, "tok", 0), "COHORT_RESUME"),
            "s3://b/ck/fm/step-000000000100");
  EXPECT_EQ(WorkerEnv(DesiredObjects(tj, "tok", 1), "COHORT_RESUME"), "latest");
}

TEST(OwnedObjectsTest, OnlyTheOperatorRestartsSoMaxRestartsCountsOnce) {
  // spec.maxRestarts 2 renders COHORT_MAX_RESTARTS=2 for launchers on their own; under the
  // operator the launchers restart nothing (the operator recreates the Job instead) and an
  // MPIJob's own retries are off, or a job would get up to (2+1)x(2+1) attempts.
  for (int attempt : {0, 1}) {
    const OwnedObjects o = DesiredObjects(TrainingJob(), "tok", attempt);
    int found = 0;
    for (const Json& e : o.worker["spec"]["template"]["spec"]["containers"][0]["env"]) {
      if (e["name"] != "COHORT_MAX_RESTARTS") continue;
      ++found;
      EXPECT_EQ(e["value"], "0");
    }
    EXPECT_EQ(found, 1) << attempt;
  }
  const OwnedObjects mpi = DesiredObjects(TrainingJob("mpi"), "tok", 1);
  ASSERT_EQ(mpi.worker["kind"], "MPIJob");
  EXPECT_EQ(mpi.worker["spec"]["runPolicy"]["backoffLimit"], 0);
  for (const auto& [role, replica] : mpi.worker["spec"]["mpiReplicaSpecs"].items()) {
    bool restart = false;
    for (const Json& e : replica["template"]["spec"]["containers"][0]["env"])
      restart |= e["name"] == "COHORT_RESTART" && e["value"] == "1";
    EXPECT_TRUE(restart) << role;
  }
  // mpirun forwards them to the ranks it starts over SSH.
  const Json& command =
      mpi.worker["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
                ["command"];
  for (const char* name : {"COHORT_RESTART", "COHORT_RESUME", "COHORT_MAX_RESTARTS"}) {
    int forwarded = 0;
    for (size_t i = 0; i + 1 < command.size(); ++i)
      forwarded += command[i] == "-x" && command[i + 1] == name;
    EXPECT_EQ(forwarded, 1) << name << " in " << command.dump();
  }
}

TEST(OwnedObjectsTest, BadSpecsGiveRendersOneLine) {
  Json tj = TrainingJob();
  tj["spec"]["nnodes"] = 0;
  EXPECT_THROW(DesiredObjects(tj, "t", 0), InvalidArgument);
  tj = TrainingJob("tpu");
  try {
    DesiredObjects(tj, "t", 0);
    FAIL() << "an unknown backend was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("spec.backend"), std::string::npos) << e.what();
  }
  tj = TrainingJob();
  tj["spec"].erase("image");
  EXPECT_THROW(DesiredObjects(tj, "t", 0), InvalidArgument);
}

TEST(LeaseTest, Decisions) {
  EXPECT_EQ(DecideLease(nullptr, "a", 0), LeaseStep::kCreate);
  const Json held = {{"spec", {{"holderIdentity", "b"}, {"leaseDurationSeconds", 10}}}};
  EXPECT_EQ(DecideLease(held, "a", 9.9), LeaseStep::kWait);
  EXPECT_EQ(DecideLease(held, "a", 10), LeaseStep::kTakeOver);
  EXPECT_EQ(DecideLease(held, "b", 0), LeaseStep::kRenew);
  EXPECT_EQ(DecideLease({{"spec", {{"holderIdentity", ""}}}}, "a", 0), LeaseStep::kTakeOver);
}

TEST(LeaseTest, TheRecordWritten) {
  const Json made = LeaseFor(LeaseStep::kCreate, nullptr, "ns", "l", "a", 15, "T0");
  EXPECT_EQ(made["apiVersion"], "coordination.k8s.io/v1");
  EXPECT_EQ(made["spec"]["holderIdentity"], "a");
  EXPECT_EQ(made["spec"]["leaseDurationSeconds"], 15);
  EXPECT_EQ(made["spec"]["leaseTransitions"], 0);
  Json read = made;
  read["metadata"]["resourceVersion"] = "42";
  const Json renewed = LeaseFor(LeaseStep::kRenew, read, "ns", "l", "a", 15, "T1");
  EXPECT_EQ(renewed["spec"]["renewTime"], "T1");
  EXPECT_EQ(renewed["spec"]["acquireTime"], "T0");
  EXPECT_EQ(renewed["metadata"]["resourceVersion"], "42");  // optimistic concurrency
  const Json taken = LeaseFor(LeaseStep::kTakeOver, read, "ns", "l", "b", 15, "T2");
  EXPECT_EQ(taken["spec"]["holderIdentity"], "b");
  EXPECT_EQ(taken["spec"]["leaseTransitions"], 1);
  EXPECT_EQ(taken["spec"]["acquireTime"], "T2");
  const std::string now = UtcNowRfc3339Micros();
  EXPECT_EQ(now.size(), 27u) << now;  // 2026-12-03T10:01:05.123456Z
  EXPECT_EQ(now.back(), 'Z');
}

TEST(Base64Test, RoundTripAndErrors) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)})
    EXPECT_EQ(Base64Decode(Base64Encode(s), "x"), s);
  EXPECT_EQ(Base64Encode("CA PEM"), "Q0EgUEVN");
  EXPECT_EQ(Base64Decode("Q0Eg\nUEVN\n", "x"), "CA PEM");
  EXPECT_THROW(Base64Decode("Q0E*", "x"), InvalidArgument);
}

}  // namespace
}  // namespace cohort::k8s
