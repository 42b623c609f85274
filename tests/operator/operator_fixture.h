// What the operator's scenario tests share: an API-server double (tests/util/kube/) in the test
// process, whose kubelet runs pods as local processes (`cohort` on their PATH); the TrainingJob
// CRD applied with the machine's kubectl; a kubeconfig for cohort-operator, started as a
// process; and polling reads of what the operator writes. Header-only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "operator/job_status.h"
#include "operator/kube_client.h"
#include "tests/util/kube/kube_double.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::k8s::testing {

using cohort::testing::BinPath;
using cohort::testing::ProcessResult;
using cohort::testing::Subprocess;
using cohort::testing::TestDir;

inline const char kKubectl[] = "/usr/bin/kubectl";
inline const std::string kCrd = std::string(COHORT_SOURCE_DIR) + "/operator/deploy/crd.yaml";

class OperatorFixture : public ::testing::Test {
 protected:
  explicit OperatorFixture(const std::string& name)
      : dir_(name), api_(DoubleOptions(dir_)), client_(DoubleConfig(api_.port())) {
    std::ofstream(dir_.File("kubeconfig"))
        << "apiVersion: v1\nkind: Config\ncurrent-context: double\nclusters:\n- name: double\n"
        << "  cluster: {server: '" << api_.url() << "'}\ncontexts:\n- name: double\n"
        << "  context: {cluster: double}\n";
  }

  // Skips without kubectl; applies the TrainingJob CRD.
  void SetUp() override {
    if (!std::filesystem::exists(kKubectl)) GTEST_SKIP() << "no kubectl at " << kKubectl;
    const ProcessResult r = Kubectl({"apply", "-f", kCrd});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  static kube::KubeDoubleOptions DoubleOptions(const TestDir& dir) {
    kube::KubeDoubleOptions o;
    o.work_dir = dir.File("pods");
    std::filesystem::create_directories(o.work_dir);
    o.kill_grace = std::chrono::milliseconds(500);
    const std::string bin = std::filesystem::path(BinPath("cohort")).parent_path().string();
    o.pod_env = {{"PATH", bin + ":/usr/bin:/bin"},
                 {"COHORT_STORE_TIMEOUT", "10"},
                 {"OPENBLAS_NUM_THREADS", "1"},
                 {"OMP_NUM_THREADS", "1"}};
    return o;
  }

  static KubeConfig DoubleConfig(int port) {
    KubeConfig c;
    c.server = "http://127.0.0.1:" + std::to_string(port);
    c.source = "the test's API-server double";
    return c;
  }

  ProcessResult Kubectl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {kKubectl, "--server", api_.url(), "--cache-dir",
                                     dir_.File("kubectl-cache")};
    argv.insert(argv.end(), args.begin(), args.end());
    Subprocess p(argv, {{"KUBECONFIG", "/dev/null"}, {"HOME", dir_.File("")}});
    return p.Wait(std::chrono::seconds(30));
  }

  // cohort-operator against the double: a short lease (2 s, renewed every 0.4 s), a resync
  // every 0.3 s.
  std::unique_ptr<Subprocess> StartOperator(const std::string& identity) {
    return std::make_unique<Subprocess>(
        std::vector<std::string>{BinPath("cohort-operator"), "--kubeconfig",
                                 dir_.File("kubeconfig"), "--lease-namespace", "default",
                                 "--identity", identity, "--lease-duration", "2", "--renew-period",
                                 "0.4", "--resync", "0.3", "--watch-timeout", "20"},
        std::map<std::string, std::string>{{"COHORT_LOG_LEVEL", "info"}});
  }

  // kubectl apply of one object.
  void Apply(const Json& doc) {
    const std::string file = dir_.File(doc["metadata"]["name"].get<std::string>() + ".json");
    std::ofstream(file) << doc.dump(2);
    const ProcessResult r = Kubectl({"apply", "-f", file});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  ApiResult Read(const Resource& r, const std::string& name) {
    return client_.Get(ResourcePath(r, "default", name));
  }

  // Polls until test(object of r) holds; the object then (null on timeout).
  Json Await(const Resource& r, const std::string& name,
             const std::function<bool(const Json&)>& test, double timeout_s = 10) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      const ApiResult got = Read(r, name);
      if (got.ok() && test(got.body)) return got.body;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return Json();
  }

  // The TrainingJob once its phase is `phase` (null on timeout); every phase seen on the way
  // goes to *seen.
  Json AwaitPhase(const std::string& name, const std::string& phase, double timeout_s = 10,
                  std::vector<std::string>* seen = nullptr) {
    return Await(
        kTrainingJobs, name,
        [&](const Json& tj) {
          const std::string now = tj.contains("status") ? tj["status"].value("phase", "") : "";
          if (seen != nullptr && !now.empty() && (seen->empty() || seen->back() != now))
            seen->push_back(now);
          return now == phase;
        },
        timeout_s);
  }

  static const Json* Condition(const Json& tj, const std::string& type) {
    for (const Json& c : tj["status"]["conditions"])
      if (c["type"] == type) return &c;
    return nullptr;
  }

  // How many objects of r carry the operator's owner label for TrainingJob `name`.
  int Count(const Resource& r, const std::string& name) {
    const ApiResult list = client_.List(ResourcePath(r, "default"),
                                        std::string("labelSelector=") + kOwnerLabel + "%3D" + name);
    EXPECT_TRUE(list.ok()) << list.Message();
    return static_cast<int>(list.body["items"].size());
  }

  // Every pod's log so far (the double keeps them under work_dir/NAMESPACE/POD/log).
  std::string PodLogs() const {
    std::string all;
    const std::filesystem::path root = std::filesystem::path(api_.work_dir()) / "default";
    if (!std::filesystem::exists(root)) return all;
    for (const auto& pod : std::filesystem::directory_iterator(root)) {
      std::ifstream in(pod.path() / "log");
      all += "--- " + pod.path().filename().string() + "\n";
      all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    return all;
  }

  TestDir dir_;
  kube::KubeDouble api_;
  KubeClient client_;
};

}  // namespace cohort::k8s::testing
