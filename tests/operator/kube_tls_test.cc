// The API client over HTTPS as a cluster's API server wants it: a kubeconfig with the cluster's
// CA (certificate-authority-data), a client certificate and key (client-certificate-data,
// client-key-data) or a bearer token, against a real TLS server (cpp-httplib's SSLServer, which
// checks the client's certificate against its CA). Refused: a server whose CA is not the
// kubeconfig's, and a client without a certificate. The certificates are made by openssl here.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/base64.h"
#include "common/error.h"
#include "operator/kube_client.h"
#include "operator/kube_config.h"
#include "tests/util/test_dir.h"

namespace cohort::k8s {
namespace {

using cohort::testing::TestDir;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it.
bool MakeCertificates(const TestDir& d) {
  const std::string dir = d.File("");
  const std::string script =
      "cd '" + dir +
      "' && "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 "
      "-subj /CN=test-ca && "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 "
      "&& "
      "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt "
      "-days 1 -extfile san.ext && "
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
      "-subj /CN=cohort-operator && "
      "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt "
      "-days 1 && "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 1 "
      "-subj /CN=other-ca) >/dev/null 2>&1";
  return std::system(("(" + script).c_str()) == 0;
}

class KubeTls : public ::testing::Test {
 protected:
  KubeTls() : dir_("kubetls") {}
  void SetUp() override {
    ASSERT_TRUE(MakeCertificates(dir_)) << "openssl failed in " << dir_.File("");
    server_ = std::make_unique<httplib::SSLServer>(dir_.File("server.crt").c_str(),
                                                   dir_.File("server.key").c_str(),
                                                   dir_.File("ca.crt").c_str());
    server_->Get("/api/v1/namespaces/default/pods/p",
                 [](const httplib::Request& req, httplib::Response& res) {
                   res.set_content(R"({"kind":"Pod","metadata":{"name":"p"},"auth":")" +
                                       req.get_header_value("Authorization") + "\"}",
                                   "application/json");
                 });
    port_ = server_->bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_->listen_after_bind(); });
  }
  void TearDown() override {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }

  KubeConfig Config(const std::string& ca_file, bool client_cert, const std::string& token) {
    std::string user = token.empty() ? "" : "    token: " + token + "\n";
    if (client_cert) {
      user += "    client-certificate-data: " + Base64Encode(Slurp(dir_.File("client.crt"))) +
              "\n    client-key-data: " + Base64Encode(Slurp(dir_.File("client.key"))) + "\n";
    }
    if (user.empty()) user = "    {}\n";
    const std::string text =
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n"
        "    server: https://127.0.0.1:" +
        std::to_string(port_) +
        "\n"
        "    certificate-authority-data: " +
        Base64Encode(Slurp(dir_.File(ca_file))) +
        "\n"
        "contexts:\n- name: c\n  context: {cluster: k, user: u}\nusers:\n- name: u\n  user:\n" +
        user;
    return ParseKubeconfig(text, "kc", dir_.File(""));
  }

  static ApiResult GetPod(const KubeConfig& config) {
    http::Options o;
    o.max_attempts = 1;
    KubeClient client(config, o);
    return client.Get(ResourcePath(kPods, "default", "p"));
  }

  TestDir dir_;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;
};

TEST_F(KubeTls, ClientCertificateAndTokenOverVerifiedTls) {
  ApiResult r = GetPod(Config("ca.crt", true, ""));
  ASSERT_TRUE(r.ok()) << r.Message();
  EXPECT_EQ(r.body["metadata"]["name"], "p");
  EXPECT_EQ(r.body["auth"], "");
  r = GetPod(Config("ca.crt", true, "s3cret"));
  ASSERT_TRUE(r.ok()) << r.Message();
  EXPECT_EQ(r.body["auth"], "Bearer s3cret");
}

TEST_F(KubeTls, AServerOfAnotherCaOrNoClientCertificateIsRefused) {
  auto error = [](const KubeConfig& c) {
    try {
      GetPod(c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // Not the cluster's CA: one line naming the server and the certificate problem.
  const std::string wrong_ca = error(Config("other.crt", true, ""));
  EXPECT_NE(wrong_ca.find("Kubernetes API server https://127.0.0.1:"), std::string::npos)
      << wrong_ca;
  EXPECT_NE(wrong_ca.find("certificate"), std::string::npos) << wrong_ca;
  // The server wants a client certificate: the handshake fails.
  EXPECT_NE(error(Config("ca.crt", false, "t")), "no error");
  KubeConfig insecure = Config("other.crt", true, "");
  insecure.tls.insecure_skip_verify = true;
  EXPECT_TRUE(GetPod(insecure).ok());
}

}  // namespace
}  // namespace cohort::k8s
