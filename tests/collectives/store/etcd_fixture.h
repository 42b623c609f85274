// A real etcd (Debian's etcd-server) for tests: started on 127.0.0.1 (or a given address) on
// free ports with a data directory of its own, waited for until it answers, and killed and
// removed afterwards. Available() says why not where the binary is missing.
#pragma once

#include <memory>
#include <string>

#include "tests/util/subprocess.h"

namespace cohort::testing {

class EtcdServer {
 public:
  // "" when /usr/bin/etcd exists, else what to install.
  static std::string UnavailableReason();

  // Starts etcd listening for clients on host:client_port (0: a free port) and waits (10 s)
  // until it serves. `in` prefixes the command (to run it inside a network namespace).
  // Throws std::runtime_error with etcd's output when it does not come up.
  explicit EtcdServer(const std::string& host = "127.0.0.1", int client_port = 0,
                      const std::vector<std::string>& in = {});
  ~EtcdServer();

  // host:port of the client URL.
  const std::string& endpoint() const { return endpoint_; }

  // Turns on etcd's v3 auth as `etcdctl user add root; etcdctl auth enable` does: user root
  // (password root_password) with role root, then auth enable; and adds `extra_user` (password
  // the same) with no role at all, for refusals. Through its JSON gateway with /usr/bin/curl,
  // run with the same prefix as etcd (so inside its namespace). Throws std::runtime_error with
  // the answer when a step fails.
  void EnableAuth(const std::string& root_password, const std::string& extra_user = "");
  Subprocess& process() { return *process_; }

 private:
  // POSTs body to path on this etcd; returns the answer. Throws when curl fails.
  std::string Post(const std::string& path, const std::string& body);

  std::string dir_;
  std::string endpoint_;
  std::vector<std::string> in_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace cohort::testing
