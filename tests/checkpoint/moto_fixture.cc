#include "tests/checkpoint/moto_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/net.h"
#include "tests/util/subprocess.h"

extern char** environ;

namespace cohort::testing {
namespace {

std::unique_ptr<MotoServer>& Instance() {
  static std::unique_ptr<MotoServer> instance;
  return instance;
}

std::string& Reason() {
  static std::string reason;
  return reason;
}

std::string Tail(const std::string& s, size_t n = 1500) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool CanConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

nlohmann::json ParseJson(const AwsResult& r, const std::string& what) {
  size_t brace = r.output.find('{');
  if (r.exit_code != 0 || brace == std::string::npos)
    throw std::runtime_error(what + " failed (exit " + std::to_string(r.exit_code) +
                             "): " + Tail(r.output));
  return nlohmann::json::parse(r.output.substr(brace));
}

}  // namespace

MotoServer* MotoServer::Shared() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::unique_ptr<MotoServer> server(new MotoServer());
    try {
      server->Start();
      Instance() = std::move(server);
    } catch (const std::exception& e) {
      Reason() = std::string("moto S3 server unavailable: ") + e.what();
    }
  });
  return Instance().get();
}

const std::string& MotoServer::SkipReason() { return Reason(); }

void MotoServer::Start() {
  port_ = net::FreePort();
  endpoint_ = "http://127.0.0.1:" + std::to_string(port_);

  char tmpl[] = "/tmp/cohort-moto-XXXXXX";
  int log_fd = ::mkstemp(tmpl);
  if (log_fd < 0) throw std::runtime_error("mkstemp failed");
  log_path_ = tmpl;
  // Everything the child needs is prepared before fork(): only async-signal-safe calls after.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (std::string(*e).rfind("INITIAL_NO_AUTH_ACTION_COUNT=", 0) != 0) env_strings.push_back(*e);
  // Exactly the three IAM calls of moto_fixture_setup.py go through unsigned; every later
  // request must be signed with the key they create.
  env_strings.push_back("INITIAL_NO_AUTH_ACTION_COUNT=3");
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  // python3 from PATH (pyenv's shim execs the interpreter in the same process, so the death
  // signal below still applies to the server).
  std::vector<std::string> argv_strings = {"/usr/bin/env",
                                           "python3",
                                           COHORT_MOTO_DIR "/moto_fixture_server.py",
                                           "-H",
                                           "127.0.0.1",
                                           "-p",
                                           std::to_string(port_)};
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphaned server if the test binary dies
    if (::getppid() != parent) ::_exit(1);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log_fd);

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!CanConnect(port_)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("moto exited at start: " + Tail(ReadFile(log_path_)));
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("moto did not listen on " + endpoint_ +
                               " within 30 s: " + Tail(ReadFile(log_path_)));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  const std::string log = ReadFile(log_path_);
  size_t at = log.find("python: ");
  if (at == std::string::npos) throw std::runtime_error("moto's launcher did not name its python");
  python_ = log.substr(at + 8, log.find('\n', at) - at - 8);

  // IAM user, key and Allow-* policy (the only unsigned calls), then the bucket with that key,
  // in one awscli session (moto_fixture_setup.py).
  Subprocess setup({python_, COHORT_MOTO_DIR "/moto_fixture_setup.py", endpoint_, bucket_, region_},
                   {});
  ProcessResult r = setup.Wait(std::chrono::seconds(120));
  size_t brace = r.output.rfind('{');
  if (r.exit_code != 0 || brace == std::string::npos)
    throw std::runtime_error("moto setup with awscli failed: " + Tail(r.output));
  auto key = nlohmann::json::parse(r.output.substr(brace));
  access_key_id_ = key["AccessKeyId"].get<std::string>();
  secret_access_key_ = key["SecretAccessKey"].get<std::string>();
}

MotoServer::~MotoServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (!log_path_.empty()) ::unlink(log_path_.c_str());
}

std::map<std::string, std::string> MotoServer::Env() const {
  return {{"AWS_ENDPOINT_URL", endpoint_},
          {"AWS_REGION", region_},
          {"AWS_ACCESS_KEY_ID", access_key_id_},
          {"AWS_SECRET_ACCESS_KEY", secret_access_key_},
          {"AWS_SESSION_TOKEN", ""},
          {"COHORT_S3_ENDPOINT", ""},
          {"COHORT_S3_REGION", ""},
          {"COHORT_S3_ACCESS_KEY_ID", ""},
          {"COHORT_S3_SECRET_ACCESS_KEY", ""},
          {"COHORT_S3_SESSION_TOKEN", ""}};
}

void MotoServer::ExportEnv() const {
  for (const auto& [k, v] : Env()) {
    if (v.empty()) {
      ::unsetenv(k.c_str());
    } else {
      ::setenv(k.c_str(), v.c_str(), 1);
    }
  }
}

std::string MotoServer::FreshUri(const std::string& name) {
  return "s3://" + bucket_ + "/" + name + "-" + std::to_string(fresh_++);
}

void MotoServer::CreateBucket(const std::string& name) const {
  AwsResult r = Aws({"s3api", "create-bucket", "--bucket", name});
  if (r.exit_code != 0)
    throw std::runtime_error("s3api create-bucket " + name + ": " + Tail(r.output));
}

AwsResult MotoServer::RunAws(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env) const {
  // env -u: settings of whoever runs the tests must not leak in (an empty AWS_PROFILE is an
  // error to awscli, so they cannot just be overridden).
  std::vector<std::string> argv = {
      "/usr/bin/env",     "-u",    "AWS_PROFILE", "-u",     "AWS_SESSION_TOKEN", "-u",
      "AWS_ENDPOINT_URL", python_, "-m",          "awscli", "--endpoint-url",    endpoint_};
  argv.insert(argv.end(), args.begin(), args.end());
  std::map<std::string, std::string> full = {{"AWS_DEFAULT_REGION", region_},
                                             {"AWS_REGION", region_},
                                             {"AWS_CONFIG_FILE", "/dev/null"},
                                             {"AWS_SHARED_CREDENTIALS_FILE", "/dev/null"},
                                             {"AWS_EC2_METADATA_DISABLED", "true"}};
  for (const auto& [k, v] : env) full[k] = v;
  Subprocess p(argv, full);
  ProcessResult r = p.Wait(std::chrono::seconds(60));
  return {r.exit_code, r.output};
}

AwsResult MotoServer::Aws(const std::vector<std::string>& args) const {
  return RunAws(
      args, {{"AWS_ACCESS_KEY_ID", access_key_id_}, {"AWS_SECRET_ACCESS_KEY", secret_access_key_}});
}

std::optional<std::string> MotoServer::AwsGet(const std::string& key) const {
  char tmpl[] = "/tmp/cohort-awsget-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return std::nullopt;
  ::close(fd);
  AwsResult r = Aws({"s3", "cp", "--only-show-errors", "s3://" + bucket_ + "/" + key, tmpl});
  std::optional<std::string> out;
  if (r.exit_code == 0) out = ReadFile(tmpl);
  ::unlink(tmpl);
  return out;
}

std::map<std::string, std::string> MotoServer::AwsGetAll(const std::string& prefix) const {
  char tmpl[] = "/tmp/cohort-awsgetall-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  std::string dir = tmpl;
  AwsResult r = Aws({"s3", "cp", "--only-show-errors", "--recursive",
                     "s3://" + bucket_ + "/" + prefix + "/", dir});
  std::map<std::string, std::string> out;
  if (r.exit_code == 0) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
      if (entry.is_regular_file())
        out[std::filesystem::relative(entry.path(), dir).string()] = ReadFile(entry.path());
  }
  std::filesystem::remove_all(dir);
  if (r.exit_code != 0) throw std::runtime_error("aws s3 cp --recursive: " + Tail(r.output));
  return out;
}

std::vector<AwsObject> MotoServer::AwsList(const std::string& prefix) const {
  auto json = ParseJson(Aws({"s3api", "list-objects-v2", "--bucket", bucket_, "--prefix", prefix,
                             "--output", "json"}),
                        "s3api list-objects-v2");
  std::vector<AwsObject> out;
  if (json.contains("Contents"))
    for (const auto& o : json["Contents"])
      out.push_back(
          {o["Key"].get<std::string>(), o["Size"].get<uint64_t>(), o["ETag"].get<std::string>()});
  return out;
}

int MotoServer::PendingMultipartUploads(const std::string& prefix) const {
  AwsResult r = Aws({"s3api", "list-multipart-uploads", "--bucket", bucket_, "--prefix", prefix,
                     "--output", "json"});
  if (r.exit_code == 0 && r.output.find('{') == std::string::npos) return 0;  // empty answer
  auto json = ParseJson(r, "s3api list-multipart-uploads");
  return json.contains("Uploads") ? static_cast<int>(json["Uploads"].size()) : 0;
}

}  // namespace cohort::testing
