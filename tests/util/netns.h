// Several "nodes" on one machine for tests: each node is a Linux network namespace with its own
// address (10.77.0.<i+1>/24 on eth0), its own hostname (node<i>, in a UTS namespace of each
// command) resolvable by every node (/etc/netns/<ns>/hosts, which `ip netns exec` mounts over
// /etc/hosts), and its own /dev/shm (a tmpfs per command, so ranks on different nodes cannot
// meet through shared memory). The nodes hang off a bridge that lives in a namespace of its own,
// so nothing is added to the root namespace and traffic stays inside what the test made.
//
// Every name carries the creating process's pid ("cohort-t<pid>-<k>-..."): parallel test
// processes never collide, and a new cluster first removes the namespaces of processes that no
// longer exist (a test killed before its destructor ran). Commands started in a node get
// PR_SET_PDEATHSIG=SIGKILL (setpriv), so they die with the test process.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/util/subprocess.h"

namespace cohort::testing {

struct NetnsNode {
  std::string netns;     // the namespace's name
  std::string hostname;  // node<i>, as gethostname() returns it inside
  std::string address;   // 10.77.0.<i+1>
  std::string link;      // the bridge side of its veth (in the bridge's namespace)
};

class NetnsCluster {
 public:
  // Why namespaces cannot be made here ("needs root or CAP_NET_ADMIN", "no `ip`"), or "" when
  // they can (probed once by making and deleting one).
  static std::string UnavailableReason();

  // Makes n nodes. Throws std::runtime_error naming the `ip` command that failed.
  explicit NetnsCluster(int n);
  ~NetnsCluster();  // kills every process left in the nodes, deletes every namespace and file
  NetnsCluster(const NetnsCluster&) = delete;
  NetnsCluster& operator=(const NetnsCluster&) = delete;

  int size() const { return static_cast<int>(nodes_.size()); }
  const NetnsNode& node(int i) const { return nodes_.at(i); }

  // argv with the prefix that runs it inside node i (for Subprocess or RunAll).
  std::vector<std::string> InNode(int i, const std::vector<std::string>& argv) const;
  // Starts argv (argv[0] a path) inside node i with the current environment plus env.
  std::unique_ptr<Subprocess> Start(int i, const std::vector<std::string>& argv,
                                    const std::map<std::string, std::string>& env = {}) const;

  // Cuts node i off the bridge (its veth down; no RST, packets just stop) and back.
  void SetLinkUp(int i, bool up) const;
  // Sends sig to every process inside node i; returns how many there were.
  int KillAll(int i, int sig) const;
  // The pids inside node i (`ip netns pids`).
  std::vector<int> Pids(int i) const;

  // Namespaces and /etc/netns entries whose owning process is gone; returns how many.
  static int RemoveStale();

 private:
  void Make(int n);
  void Remove();

  std::string prefix_;  // "cohort-t<pid>-<k>"
  std::string bridge_;  // the bridge's namespace
  std::vector<NetnsNode> nodes_;
  std::vector<std::string> made_;  // namespaces made so far, for Remove()
};

// Runs `ip ARGS...`; throws std::runtime_error with its output when it fails.
std::string RunIp(const std::vector<std::string>& args);

}  // namespace cohort::testing
