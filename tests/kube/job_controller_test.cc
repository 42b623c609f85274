// The API-server double's Job controller and kubelet: Indexed Jobs whose pods run as local
// processes with the env Kubernetes gives them, to Complete; a failing pod to Failed with its
// termination message in the pod's status; backoffLimit; suspend and resume; a deleted Job's
// processes stopped.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/kube/rest_client.h"
#include "tests/util/kube/kube_double.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::kube {
namespace {

using cohort::testing::TestDir;
using testing::Rest;

const char kJobs[] = "/apis/batch/v1/namespaces/default/jobs";
const char kPods[] = "/api/v1/namespaces/default/pods";

Json IndexedJob(const std::string& name, int count, const std::string& script, int backoff = 0) {
  return {{"apiVersion", "batch/v1"},
          {"kind", "Job"},
          {"metadata", {{"name", name}}},
          {"spec",
           {{"completionMode", "Indexed"},
            {"completions", count},
            {"parallelism", count},
            {"backoffLimit", backoff},
            {"template",
             {{"spec",
               {{"subdomain", name},
                {"restartPolicy", "Never"},
                {"containers",
                 {{{"name", "main"},
                   {"image", "ignored"},
                   {"command", {"/bin/sh", "-c", script}},
                   {"env",
                    {{{"name", "PEER"}, {"value", name + "-0." + name + ":29500"}},
                     {{"name", "SECRET"},
                      {"valueFrom", {{"secretKeyRef", {{"name", "s"}, {"key", "token"}}}}}},
                     {{"name", "POD"},
                      {"valueFrom", {{"fieldRef", {{"fieldPath", "metadata.name"}}}}}}}}}}}}}}}}}};
}

// Polls the Job until `condition` is True; the Job as it was then (null on timeout).
Json AwaitCondition(Rest& rest, const std::string& name, const std::string& condition,
                    std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const Json job = rest.Get(std::string(kJobs) + "/" + name).body;
    for (const auto& c : job.value("status", Json::object()).value("conditions", Json::array())) {
      if (c["type"] == condition && c["status"] == "True") return job;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Json();
}

// Whether pid runs (a zombie nobody reaped yet does not).
bool Alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] != 'Z';
}

Json Pods(Rest& rest, const std::string& job) {
  return rest.Get(std::string(kPods) + "?labelSelector=batch.kubernetes.io%2Fjob-name%3D" + job)
      .body["items"];
}

class JobControllerTest : public ::testing::Test {
 protected:
  JobControllerTest() : dir_("kubejobs"), api_(Options()), rest_(api_.port()) {
    const Json secret = {{"metadata", {{"name", "s"}}}, {"stringData", {{"token", "t0k"}}}};
    EXPECT_EQ(rest_.Post("/api/v1/namespaces/default/secrets", secret).status, 201);
  }
  KubeDoubleOptions Options() {
    KubeDoubleOptions o;
    o.work_dir = dir_.File("");
    o.kill_grace = std::chrono::milliseconds(500);
    return o;
  }
  TestDir dir_;
  KubeDouble api_;
  Rest rest_;
};

TEST_F(JobControllerTest, IndexedJobRunsEachPodWithItsEnvToComplete) {
  const Json service = {{"metadata", {{"name", "two"}}},
                        {"spec", {{"clusterIP", "None"}, {"ports", {{{"port", 29500}}}}}}};
  ASSERT_EQ(rest_.Post("/api/v1/namespaces/default/services", service).status, 201);
  const std::string out = dir_.File("out");
  const std::string script = "echo \"$JOB_COMPLETION_INDEX $HOSTNAME $PEER $SECRET $POD\" > " +
                             out + ".$JOB_COMPLETION_INDEX";
  ASSERT_EQ(rest_.Post(kJobs, IndexedJob("two", 2, script)).status, 201);
  const Json job = AwaitCondition(rest_, "two", "Complete", std::chrono::seconds(10));
  ASSERT_FALSE(job.is_null()) << rest_.Get(std::string(kJobs) + "/two").text;
  EXPECT_EQ(job["status"]["succeeded"], 2);
  EXPECT_EQ(job["status"]["completedIndexes"], "0-1");
  EXPECT_TRUE(job["status"].contains("completionTime"));
  const Json pods = Pods(rest_, "two");
  ASSERT_EQ(pods.size(), 2u);
  std::string peer0, peer1;
  for (const auto& pod : pods) {
    const std::string index =
        pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"];
    const std::string name = pod["metadata"]["name"];
    EXPECT_EQ(name.rfind("two-" + index + "-", 0), 0u) << name;
    EXPECT_EQ(pod["spec"]["hostname"], "two-" + index);
    EXPECT_EQ(pod["status"]["phase"], "Succeeded");
    EXPECT_EQ(pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    std::ifstream in(out + "." + index);
    std::string i, host, peer, secret, pod_name;
    in >> i >> host >> peer >> secret >> pod_name;
    EXPECT_EQ(i, index);
    EXPECT_EQ(host, "two-" + index);
    EXPECT_EQ(peer.rfind("127.0.0.1:", 0), 0u) << peer;  // the Service name resolves here
    EXPECT_EQ(secret, "t0k");
    EXPECT_EQ(pod_name, name);
    (index == "0" ? peer0 : peer1) = peer;
  }
  EXPECT_EQ(peer0, peer1);  // both pods meet at the same port
}

TEST_F(JobControllerTest, FailingPodFailsTheJobWithItsTerminationMessage) {
  const std::string script =
      "if [ \"$JOB_COMPLETION_INDEX\" = 1 ]; then echo boom; echo 'rank 3 on node 1 exited with "
      "code 7' "
      "> \"$COHORT_TERMINATION_LOG\"; exit 7; fi; sleep 30";
  ASSERT_EQ(rest_.Post(kJobs, IndexedJob("bad", 2, script)).status, 201);
  const Json job = AwaitCondition(rest_, "bad", "Failed", std::chrono::seconds(10));
  ASSERT_FALSE(job.is_null()) << rest_.Get(std::string(kJobs) + "/bad").text;
  EXPECT_EQ(job["status"]["failed"], 1);
  bool reason = false;
  for (const auto& c : job["status"]["conditions"]) {
    reason |= c["type"] == "Failed" && c["reason"] == "BackoffLimitExceeded";
  }
  EXPECT_TRUE(reason) << job.dump();
  bool found = false;
  for (const auto& pod : Pods(rest_, "bad")) {
    if (pod["status"]["phase"] != "Failed") continue;
    const Json term = pod["status"]["containerStatuses"][0]["state"]["terminated"];
    EXPECT_EQ(term["exitCode"], 7);
    EXPECT_EQ(term["reason"], "Error");
    EXPECT_EQ(term["message"], "rank 3 on node 1 exited with code 7\n");
    // What it printed, as `kubectl logs` reads it.
    const auto log =
        rest_.Get(std::string(kPods) + "/" + pod["metadata"]["name"].get<std::string>() + "/log");
    EXPECT_EQ(log.status, 200);
    EXPECT_EQ(log.text, "boom\n");
    found = true;
  }
  EXPECT_TRUE(found);
  // The Job failed: its other pod (sleeping) is deleted and its process stopped.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (Pods(rest_, "bad").size() > 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(Pods(rest_, "bad").size(), 1u);
}

TEST_F(JobControllerTest, BackoffLimitRetriesAFailedIndex) {
  const std::string marker = dir_.File("tried");
  const std::string script = "if [ ! -e " + marker + " ]; then touch " + marker + "; exit 3; fi";
  ASSERT_EQ(rest_.Post(kJobs, IndexedJob("retry", 1, script, 1)).status, 201);
  const Json job = AwaitCondition(rest_, "retry", "Complete", std::chrono::seconds(10));
  ASSERT_FALSE(job.is_null()) << rest_.Get(std::string(kJobs) + "/retry").text;
  EXPECT_EQ(job["status"]["failed"], 1);
  EXPECT_EQ(job["status"]["succeeded"], 1);
  EXPECT_EQ(Pods(rest_, "retry").size(), 2u);
}

TEST_F(JobControllerTest, SuspendStopsThePodsAndResumeStartsThemAgain) {
  ASSERT_EQ(rest_.Post(kJobs, IndexedJob("nap", 2, "sleep 30")).status, 201);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::optional<pid_t> pid;
  while (std::chrono::steady_clock::now() < deadline) {
    const Json pods = Pods(rest_, "nap");
    if (pods.size() == 2 && pods[0]["status"]["phase"] == "Running") {
      pid = api_.PodPid("default", pods[0]["metadata"]["name"]);
      if (pid) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(pid);
  ASSERT_EQ(rest_.Patch(std::string(kJobs) + "/nap", {{"spec", {{"suspend", true}}}}).status, 200);
  const Json job = AwaitCondition(rest_, "nap", "Suspended", std::chrono::seconds(5));
  ASSERT_FALSE(job.is_null());
  EXPECT_EQ(job["status"]["active"], 0);
  // Its pods are Terminating (deletionTimestamp set) until their processes have ended, as a
  // real kubelet's are; then they go.
  const Json terminating = Pods(rest_, "nap");
  for (const Json& pod : terminating) {
    if (!Alive(*pid)) break;  // already gone: nothing to see
    EXPECT_TRUE(pod["metadata"].contains("deletionTimestamp")) << pod.dump();
  }
  const auto gone = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while ((Alive(*pid) || !Pods(rest_, "nap").empty()) && std::chrono::steady_clock::now() < gone) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(Alive(*pid)) << "the suspended pod's process still runs";
  EXPECT_TRUE(Pods(rest_, "nap").empty()) << Pods(rest_, "nap").dump();
  ASSERT_EQ(rest_.Patch(std::string(kJobs) + "/nap", {{"spec", {{"suspend", false}}}}).status, 200);
  const auto back = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (Pods(rest_, "nap").size() < 2 && std::chrono::steady_clock::now() < back) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(Pods(rest_, "nap").size(), 2u);
  // Deleting the Job (Background) deletes its pods and stops their processes (the pods go
  // once those have ended).
  ASSERT_EQ(rest_.Delete(std::string(kJobs) + "/nap", {{"propagationPolicy", "Background"}}).status,
            200);
  const auto deleted = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!Pods(rest_, "nap").empty() && std::chrono::steady_clock::now() < deleted) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(Pods(rest_, "nap").empty());
}

// bin/kube-apiserver-double as tests outside this binary start it: --port 0 --port-file; its
// pods' processes die with it even when it is SIGKILLed.
TEST(KubeDoubleProcess, PrintsItsPortAndTakesItsPodsWithItWhenKilled) {
  TestDir dir("kubeproc");
  cohort::testing::Subprocess double_process(
      {cohort::testing::BinPath("kube-apiserver-double"), "--port", "0", "--port-file",
       dir.File("port"), "--work-dir", dir.File("")},
      {});
  const auto line =
      double_process.AwaitLine("listening on http://127.0.0.1:", std::chrono::seconds(10));
  ASSERT_TRUE(line) << double_process.Output();
  std::ifstream in(dir.File("port"));
  int port = 0;
  in >> port;
  ASSERT_GT(port, 0);
  EXPECT_NE(line->find(":" + std::to_string(port)), std::string::npos) << *line;
  Rest rest(port);
  ASSERT_EQ(rest.Post("/api/v1/namespaces/default/secrets",
                      {{"metadata", {{"name", "s"}}}, {"stringData", {{"token", "t"}}}})
                .status,
            201);
  ASSERT_EQ(rest.Post(kJobs, IndexedJob("long", 1, "sleep 60")).status, 201);
  int pid = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (pid == 0 && std::chrono::steady_clock::now() < deadline) {
    const Json pods = Pods(rest, "long");
    if (!pods.empty()) {
      const auto r = rest.Get("/_double/pid?namespace=default&name=" +
                              pods[0]["metadata"]["name"].get<std::string>());
      if (r.status == 200) pid = r.body["pid"];
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(Alive(pid));
  double_process.Kill(SIGKILL);
  double_process.Wait(std::chrono::seconds(5));
  const auto gone = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (Alive(pid) && std::chrono::steady_clock::now() < gone) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(Alive(pid)) << "pod process group " << pid << " outlived the double";
}

}  // namespace
}  // namespace cohort::kube
