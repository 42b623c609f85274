// The kubectl installed on this machine (1.32) against the API-server double: apply of a CRD
// and of a custom resource (create, then a change: kubectl's merge patch), get (the CRD's
// printer columns, -o json), a rejected object, delete; and a Job cascade through kubectl.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/kube/rest_client.h"
#include "tests/util/kube/kube_double.h"
#include "tests/util/subprocess.h"
#include "tests/util/test_dir.h"

namespace cohort::kube {
namespace {

using cohort::testing::ProcessResult;
using cohort::testing::Subprocess;
using cohort::testing::TestDir;

const std::string kData = KUBE_TEST_DATA;
const char kKubectl[] = "/usr/bin/kubectl";

class Kubectl {
 public:
  Kubectl(const KubeDouble& api, const TestDir& dir) : url_(api.url()), cache_(dir.File("cache")) {}
  ProcessResult Run(std::vector<std::string> args) {
    std::vector<std::string> argv = {kKubectl, "--server", url_, "--cache-dir", cache_};
    argv.insert(argv.end(), args.begin(), args.end());
    Subprocess p(argv, {{"KUBECONFIG", "/dev/null"}, {"HOME", cache_}});
    return p.Wait(std::chrono::seconds(30));
  }

 private:
  std::string url_, cache_;
};

TEST(Kubectl, AppliesGetsAndDeletesATrainingJob) {
  if (!std::filesystem::exists(kKubectl)) GTEST_SKIP() << "no kubectl at " << kKubectl;
  KubeDouble api;
  TestDir dir("kubectl");
  Kubectl kubectl(api, dir);
  auto r = kubectl.Run({"apply", "-f", kData + "/trainingjob-crd.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(
                "customresourcedefinition.apiextensions.k8s.io/trainingjobs.cohort.dev created"),
            std::string::npos)
      << r.output;
  r = kubectl.Run({"apply", "-f", kData + "/trainingjob.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("trainingjob.cohort.dev/fmnist created"), std::string::npos) << r.output;

  r = kubectl.Run({"get", "trainingjobs"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("PHASE"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("NODES"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("fmnist"), std::string::npos) << r.output;

  // A changed spec goes as kubectl's merge patch; the stored object has the new value.
  std::string changed = kData + "/trainingjob.yaml";
  std::ifstream in(changed);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find("nnodes: 2"), 9, "nnodes: 3");
  std::ofstream(dir.File("tj3.yaml")) << text;
  r = kubectl.Run({"apply", "-f", dir.File("tj3.yaml")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("trainingjob.cohort.dev/fmnist configured"), std::string::npos)
      << r.output;
  r = kubectl.Run({"get", "tj", "fmnist", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Json got = Json::parse(r.output);
  EXPECT_EQ(got["spec"]["nnodes"], 3);
  EXPECT_EQ(got["metadata"]["generation"], 2);
  bool merge_patch = false;
  for (const auto& req : api.http().Requests()) {
    merge_patch |= req.method == "PATCH" && req.content_type == "application/merge-patch+json";
  }
  EXPECT_TRUE(merge_patch);

  // The schema rejects nnodes 0 with the server's one-line reason.
  text.replace(text.find("nnodes: 3"), 9, "nnodes: 0");
  std::ofstream(dir.File("tj0.yaml")) << text;
  r = kubectl.Run({"apply", "-f", dir.File("tj0.yaml")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("spec.nnodes"), std::string::npos) << r.output;

  r = kubectl.Run({"delete", "-f", kData + "/trainingjob.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("deleted"), std::string::npos) << r.output;
  r = kubectl.Run({"get", "trainingjob", "fmnist"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("NotFound"), std::string::npos) << r.output;
}

TEST(Kubectl, DeletingAnOwnerDeletesWhatItOwns) {
  if (!std::filesystem::exists(kKubectl)) GTEST_SKIP() << "no kubectl at " << kKubectl;
  KubeDouble api;
  TestDir dir("kubectl");
  Kubectl kubectl(api, dir);
  auto r = kubectl.Run({"apply", "-f", kData + "/trainingjob-crd.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = kubectl.Run({"apply", "-f", kData + "/trainingjob.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  testing::Rest rest(api.port());
  const Json tj = rest.Get("/apis/cohort.dev/v1alpha1/namespaces/default/trainingjobs/fmnist").body;
  const Json secret = {{"apiVersion", "v1"},
                       {"kind", "Secret"},
                       {"metadata",
                        {{"name", "fmnist-token"},
                         {"ownerReferences",
                          {{{"apiVersion", "cohort.dev/v1alpha1"},
                            {"kind", "TrainingJob"},
                            {"name", "fmnist"},
                            {"uid", tj["metadata"]["uid"]},
                            {"controller", true}}}}}},
                       {"stringData", {{"token", "s3cret"}}}};
  const auto created = rest.Post("/api/v1/namespaces/default/secrets", secret);
  ASSERT_EQ(created.status, 201) << created.text;
  EXPECT_EQ(created.body["data"]["token"], "czNjcmV0");  // stringData lands base64 in data
  r = kubectl.Run({"get", "secret", "fmnist-token"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = kubectl.Run({"delete", "trainingjob", "fmnist"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = kubectl.Run({"get", "secret", "fmnist-token"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("NotFound"), std::string::npos) << r.output;
}

// operator/deploy/ (the operator's CRD, ServiceAccount, RBAC and Deployment) applies as a
// directory, and the example TrainingJob against that CRD.
TEST(Kubectl, AppliesTheOperatorsDeployDirectoryAndTheExampleTrainingJob) {
  if (!std::filesystem::exists(kKubectl)) GTEST_SKIP() << "no kubectl at " << kKubectl;
  const std::string deploy = std::string(KUBE_SOURCE_DIR) + "/operator/deploy";
  if (!std::filesystem::exists(deploy + "/crd.yaml")) GTEST_SKIP() << "no " << deploy;
  KubeDouble api;
  TestDir dir("kubectl");
  Kubectl kubectl(api, dir);
  auto r = kubectl.Run({"apply", "-f", deploy + "/crd.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The manifests go to cohort-system, which must exist first (as on a real cluster).
  r = kubectl.Run({"apply", "-f", deploy});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("namespaces \"cohort-system\" not found"), std::string::npos) << r.output;
  std::ofstream(dir.File("ns.yaml")) << "apiVersion: v1\nkind: Namespace\nmetadata:\n"
                                     << "  name: cohort-system\n";
  r = kubectl.Run({"apply", "-f", dir.File("ns.yaml")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = kubectl.Run({"apply", "-f", deploy});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("deployment.apps/"), std::string::npos) << r.output;
  r = kubectl.Run(
      {"apply", "-f", std::string(KUBE_SOURCE_DIR) + "/examples/k8s/src/indexed-job.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("trainingjob.cohort.dev/fmnist-indexed created"), std::string::npos)
      << r.output;
  r = kubectl.Run({"get", "trainingjobs", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("trainingjob.cohort.dev/fmnist-indexed"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cohort::kube
