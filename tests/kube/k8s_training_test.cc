// The real thing through the API-server double: a TrainingJob rendered by `cohort render`
// (Secret, headless Service, Indexed Job of 2 pods x 2 workers, gloo) applied with kubectl; the
// double's Job controller runs each pod's `cohort launch` as a local process with the env
// Kubernetes gives it (JOB_COMPLETION_INDEX, the token from the Secret, the Service name of pod
// 0 mapped to 127.0.0.1), and Fashion-MNIST trains to its last step and the Job ends Complete.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/kube/rest_client.h"
#include "tests/launcher/elastic_job.h"
#include "tests/util/kube/kube_double.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::kube {
namespace {

using cohort::testing::BinPath;
using cohort::testing::Subprocess;
using cohort::testing::TestDir;

const char kKubectl[] = "/usr/bin/kubectl";

TEST(K8sTraining, RenderedIndexedJobTrainsThroughTheDoubleToComplete) {
  if (const std::string why = cohort::testing::FashionMnistUnavailable(); !why.empty()) {
    GTEST_SKIP() << why;
  }
  if (!std::filesystem::exists(kKubectl)) GTEST_SKIP() << "no kubectl at " << kKubectl;
  TestDir dir("k8strain");
  const std::string metrics = dir.File("metrics.jsonl");
  std::ofstream(dir.File("tj.yaml"))
      << "apiVersion: cohort.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: fm\nspec:\n"
      << "  image: cohort-train:0.1.0\n  command: [" << BinPath("fashion_mnist") << "]\n"
      << "  args: [--max-steps, \"6\", --batch-size, \"32\", --progress-interval, \"0\", "
      << "--metrics, " << metrics << "]\n"
      << "  nnodes: 2\n  nprocPerNode: 2\n  backend: gloo\n";
  Subprocess render({BinPath("cohort"), "render", dir.File("tj.yaml"), "--format", "json"}, {});
  const auto rendered = render.Wait(std::chrono::seconds(30));
  ASSERT_EQ(rendered.exit_code, 0) << rendered.output;
  std::ofstream(dir.File("manifests.json")) << rendered.output;

  KubeDoubleOptions o;
  o.work_dir = dir.File("");
  const char* path = std::getenv("PATH");
  o.pod_env = {{"PATH", std::string(COHORT_BIN_DIR) + ":" + (path ? path : "/usr/bin:/bin")},
               {"OPENBLAS_NUM_THREADS", "1"},
               {"OMP_NUM_THREADS", "1"}};
  KubeDouble api(o);
  Subprocess apply({kKubectl, "--server", api.url(), "--cache-dir", dir.File("cache"), "apply",
                    "-f", dir.File("manifests.json")},
                   {{"KUBECONFIG", "/dev/null"}, {"HOME", dir.File("")}});
  const auto applied = apply.Wait(std::chrono::seconds(30));
  ASSERT_EQ(applied.exit_code, 0) << applied.output;
  EXPECT_NE(applied.output.find("job.batch/fm created"), std::string::npos) << applied.output;

  testing::Rest rest(api.port());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(150);
  Json job;
  std::string done;
  while (done.empty() && std::chrono::steady_clock::now() < deadline) {
    job = rest.Get("/apis/batch/v1/namespaces/default/jobs/fm").body;
    for (const auto& c : job.value("status", Json::object()).value("conditions", Json::array())) {
      if ((c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
        done = c["type"];
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::string logs;
  const Json pods = rest.Get("/api/v1/namespaces/default/pods").body["items"];
  for (const auto& pod : pods) {
    const std::string name = pod["metadata"]["name"];
    logs +=
        "--- " + name + "\n" + rest.Get("/api/v1/namespaces/default/pods/" + name + "/log").text;
  }
  ASSERT_EQ(done, "Complete") << job.dump(1) << "\n" << logs;
  EXPECT_EQ(job["status"]["succeeded"], 2);
  EXPECT_EQ(pods.size(), 2u);
  const auto steps = cohort::testing::ReadSteps(metrics);
  ASSERT_FALSE(steps.empty()) << logs;
  EXPECT_EQ(steps.back(), 6) << logs;
}

}  // namespace
}  // namespace cohort::kube
