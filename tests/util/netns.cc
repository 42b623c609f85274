#include "tests/util/netns.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace cohort::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr char kNamePrefix[] = "cohort-t";
constexpr char kSubnet[] = "10.77.0.";
constexpr char kEtcNetns[] = "/etc/netns";

std::string FindTool(const std::vector<std::string>& candidates) {
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  return "";
}

const std::string& IpPath() {
  static const std::string path = FindTool({"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"});
  return path;
}

// The pid in "cohort-t<pid>-...", or -1 for names that are not ours.
int OwnerPid(const std::string& name) {
  const std::string p = kNamePrefix;
  if (name.rfind(p, 0) != 0) return -1;
  try {
    return std::stoi(name.substr(p.size()));
  } catch (const std::exception&) {
    return -1;
  }
}

bool Alive(int pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// `ip netns list` prints "name (id: N)" or "name" per line.
std::vector<std::string> NamespaceNames() {
  std::vector<std::string> names;
  std::istringstream in(RunIp({"netns", "list"}));
  for (std::string line; std::getline(in, line);) {
    const std::string name = line.substr(0, line.find(' '));
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

std::vector<int> PidsOf(const std::string& netns) {
  std::vector<int> pids;
  std::istringstream in(RunIp({"netns", "pids", netns}));
  for (int pid; in >> pid;) pids.push_back(pid);
  return pids;
}

// SIGKILLs what is left in netns and deletes it (the veths inside go with it).
void Destroy(const std::string& netns) {
  try {
    for (int pid : PidsOf(netns)) ::kill(pid, SIGKILL);
    RunIp({"netns", "del", netns});
  } catch (const std::exception&) {
    // Already gone (or never made): nothing to remove.
  }
  std::error_code ec;
  fs::remove_all(fs::path(kEtcNetns) / netns, ec);
}

}  // namespace

std::string RunIp(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {IpPath()};
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess p(argv, {});
  ProcessResult r = p.Wait(10s);
  if (r.exit_code != 0) {
    std::string cmd = "ip";
    for (const auto& a : args) cmd += " " + a;
    throw std::runtime_error(cmd + " failed: " + r.output);
  }
  return r.output;
}

std::string NetnsCluster::UnavailableReason() {
  static const std::string reason = [] {
    if (IpPath().empty()) return std::string("no `ip` command (install iproute2)");
    for (const char* tool : {"/usr/bin/setpriv", "/usr/bin/unshare"}) {
      if (::access(tool, X_OK) != 0) return std::string("no ") + tool + " (install util-linux)";
    }
    const std::string probe = kNamePrefix + std::to_string(::getpid()) + "-probe";
    try {
      RunIp({"netns", "add", probe});
    } catch (const std::exception& e) {
      return std::string("cannot create a network namespace (needs root or CAP_NET_ADMIN): ") +
             e.what();
    }
    Subprocess uts({IpPath(), "netns", "exec", probe, "/usr/bin/unshare", "--uts", "/bin/true"},
                   {});
    const ProcessResult r = uts.Wait(10s);
    Destroy(probe);
    if (r.exit_code != 0) return "cannot enter a namespace with its own hostname: " + r.output;
    return std::string();
  }();
  return reason;
}

int NetnsCluster::RemoveStale() {
  int removed = 0;
  for (const auto& name : NamespaceNames()) {
    const int owner = OwnerPid(name);
    if (owner <= 0 || Alive(owner)) continue;
    Destroy(name);
    ++removed;
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(kEtcNetns, ec)) {
    const int owner = OwnerPid(entry.path().filename().string());
    if (owner > 0 && !Alive(owner)) fs::remove_all(entry.path(), ec);
  }
  return removed;
}

NetnsCluster::NetnsCluster(int n) {
  static std::atomic<int> counter{0};
  prefix_ = kNamePrefix + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  RemoveStale();
  try {
    Make(n);
  } catch (...) {
    Remove();
    throw;
  }
}

NetnsCluster::~NetnsCluster() { Remove(); }

void NetnsCluster::Make(int n) {
  bridge_ = prefix_ + "-br";
  RunIp({"netns", "add", bridge_});
  made_.push_back(bridge_);
  RunIp({"-n", bridge_, "link", "add", "br0", "type", "bridge"});
  RunIp({"-n", bridge_, "link", "set", "br0", "up"});
  for (int i = 0; i < n; ++i) {
    NetnsNode node{prefix_ + "-n" + std::to_string(i), "node" + std::to_string(i),
                   kSubnet + std::to_string(i + 1), "v" + std::to_string(i)};
    RunIp({"netns", "add", node.netns});
    made_.push_back(node.netns);
    RunIp({"-n", bridge_, "link", "add", node.link, "type", "veth", "peer", "name", "eth0",
           "netns", node.netns});
    RunIp({"-n", bridge_, "link", "set", node.link, "master", "br0", "up"});
    RunIp({"-n", node.netns, "addr", "add", node.address + "/24", "dev", "eth0"});
    RunIp({"-n", node.netns, "link", "set", "eth0", "up"});
    RunIp({"-n", node.netns, "link", "set", "lo", "up"});
    nodes_.push_back(node);
  }
  std::ostringstream hosts;
  hosts << "127.0.0.1 localhost\n";
  for (const auto& node : nodes_) hosts << node.address << " " << node.hostname << "\n";
  for (const auto& node : nodes_) {
    const fs::path dir = fs::path(kEtcNetns) / node.netns;
    fs::create_directories(dir);
    std::ofstream(dir / "hosts") << hosts.str();
  }
}

void NetnsCluster::Remove() {
  for (auto it = made_.rbegin(); it != made_.rend(); ++it) Destroy(*it);
  made_.clear();
}

std::vector<std::string> NetnsCluster::InNode(int i, const std::vector<std::string>& argv) const {
  // setpriv and unshare exec in place (as does `ip netns exec` outside batch mode), so the pid
  // Subprocess holds is the program's own and the death signal stays set on it. The shell gives
  // the command its hostname and a private /dev/shm, then execs it.
  std::vector<std::string> out = {
      "/usr/bin/setpriv", "--pdeathsig", "KILL", IpPath(), "netns", "exec", node(i).netns,
      "/usr/bin/unshare", "--uts", "/bin/sh", "-c",
      "mount -t tmpfs -o size=512m tmpfs /dev/shm && hostname \"$0\" && exec \"$@\"",
      node(i).hostname};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::unique_ptr<Subprocess> NetnsCluster::Start(
    int i, const std::vector<std::string>& argv,
    const std::map<std::string, std::string>& env) const {
  return std::make_unique<Subprocess>(InNode(i, argv), env);
}

void NetnsCluster::SetLinkUp(int i, bool up) const {
  RunIp({"-n", bridge_, "link", "set", node(i).link, up ? "up" : "down"});
}

std::vector<int> NetnsCluster::Pids(int i) const { return PidsOf(node(i).netns); }

int NetnsCluster::KillAll(int i, int sig) const {
  const std::vector<int> pids = Pids(i);
  for (int pid : pids) ::kill(pid, sig);
  return static_cast<int>(pids.size());
}

}  // namespace cohort::testing
