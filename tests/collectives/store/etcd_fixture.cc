#include "tests/collectives/store/etcd_fixture.h"

#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "common/net.h"

namespace cohort::testing {
namespace {
constexpr char kEtcd[] = "/usr/bin/etcd";
}

std::string EtcdServer::UnavailableReason() {
  if (::access(kEtcd, X_OK) != 0) return "no /usr/bin/etcd (apt-get install etcd-server)";
  return "";
}

EtcdServer::EtcdServer(const std::string& host, int client_port,
                       const std::vector<std::string>& in)
    : in_(in) {
  char tmpl[] = "/tmp/cohort-etcd-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  const int port = client_port ? client_port : net::FreePort();
  // The peer port is never used by a single member, but etcd binds it: a free one too.
  const int peer = net::FreePort();
  endpoint_ = fmt::format("{}:{}", host, port);
  const std::string client_url = "http://" + endpoint_;
  const std::string peer_url = fmt::format("http://{}:{}", host, peer);
  std::vector<std::string> argv = in;
  for (const std::string& a : std::vector<std::string>{kEtcd, "--name", "cohort-test", "--data-dir", dir_,
                        "--listen-client-urls", client_url, "--advertise-client-urls",
                        client_url, "--listen-peer-urls", peer_url,
                        "--initial-advertise-peer-urls", peer_url, "--initial-cluster",
                        "cohort-test=" + peer_url}) {
    argv.push_back(a);
  }
  process_ = std::make_unique<Subprocess>(argv, std::map<std::string, std::string>{});
  // etcd logs "ready to serve client requests" once the client URL answers.
  if (!process_->AwaitLine("ready to serve client requests", std::chrono::seconds(10)) &&
      !process_->AwaitLine("serving insecure client requests", std::chrono::milliseconds(1))) {
    throw std::runtime_error("etcd did not come up on " + endpoint_ + ":\n" + process_->Output());
  }
}

std::string EtcdServer::Post(const std::string& path, const std::string& body) {
  std::vector<std::string> argv = in_;
  for (const std::string& a :
       {std::string("/usr/bin/curl"), std::string("-sS"), "http://" + endpoint_ + path,
        std::string("-d"), body}) {
    argv.push_back(a);
  }
  auto r = Subprocess(argv, {}).Wait(std::chrono::seconds(10));
  if (r.exit_code != 0) throw std::runtime_error("curl " + path + " failed: " + r.output);
  return r.output;
}

void EtcdServer::EnableAuth(const std::string& root_password, const std::string& extra_user) {
  auto step = [&](const std::string& path, const std::string& body) {
    const std::string answer = Post(path, body);
    if (answer.find("\"error\"") != std::string::npos) {
      throw std::runtime_error("etcd " + path + ": " + answer);
    }
  };
  step("/v3/auth/user/add", fmt::format(R"({{"name":"root","password":"{}"}})", root_password));
  step("/v3/auth/role/add", R"({"name":"root"})");
  step("/v3/auth/user/grant", R"({"user":"root","role":"root"})");
  if (!extra_user.empty()) {
    step("/v3/auth/user/add",
         fmt::format(R"({{"name":"{}","password":"{}"}})", extra_user, root_password));
  }
  step("/v3/auth/enable", "{}");
}

EtcdServer::~EtcdServer() {
  process_.reset();  // SIGKILLs it
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace cohort::testing
