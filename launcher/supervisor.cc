#include "launcher/supervisor.h"

#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "collectives/heartbeat.h"
#include "collectives/store/store_backends.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/error.h"
#include "common/net.h"
#include "launcher/elastic_members.h"
#include "launcher/launcher_metrics.h"
#include "launcher/node_rendezvous.h"
#include "launcher/round_services.h"
#include "launcher/termination_log.h"
#include "launcher/worker_env.h"
#include "launcher/worker_group.h"

namespace cohort::launcher {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

milliseconds Ms(double seconds) { return milliseconds(static_cast<int64_t>(seconds * 1000)); }

struct Outcome {
  // kReform: the group stops to re-form with a node that is waiting to join (--nnodes MIN:MAX);
  // not a failure, so it does not count against --max-restarts.
  enum Kind { kSuccess, kFailed, kInterrupted, kReform } kind = kSuccess;
  int code = 0;      // the exit code if this is the end
  std::string what;  // "rank 2 on node 0 exited with code 7"
};

struct Beat {
  std::string value;
  Clock::time_point changed;
  std::time_t wall = 0;
};

class Supervisor {
 public:
  explicit Supervisor(const LaunchPlan& plan) : plan_(plan) {}
  int Run();

 private:
  template <typename... Args>
  void Say(fmt::format_string<Args...> f, Args&&... args) {
    const std::string who =
        node_ >= 0 && nnodes_ > 1 ? fmt::format("cohort launch node {}", node_) : "cohort launch";
    std::string line = fmt::format("[{}] {}\n", who, fmt::format(f, std::forward<Args>(args)...));
    (void)!::write(2, line.data(), line.size());
  }
  // Before any thread exists (gRPC starts some): SIGINT/SIGTERM go to signalfd only, and a
  // write to a closed pipe fails instead of killing the launcher.
  void BlockStopSignals();
  void OpenStore();
  // Opens the store and the round's services and, elastic, takes this node's id: the round to
  // start at; nullopt (said, and written as the termination message) when the store is out of
  // reach.
  std::optional<int> Join();
  // Runs rounds from `round` until one succeeds, or fails for good (--max-restarts used up, or
  // a failure no restart mends); returns its outcome.
  Outcome RunRounds(int round);
  // Runs one round; an elastic node that is not admitted to `round` waits for a later one and
  // moves `round` on to it.
  Outcome RunAttempt(int& round);
  Outcome LostStore(const Error& e);
  Outcome Watch(WorkerGroup& group, int attempt, const std::string& prefix);
  // Ends the round on this node: says that it will rejoin (elastic: so that the next round's
  // closer waits for it rather than re-forming without a node that is only slow to stop), then
  // stops the workers (SIGTERM, SIGKILL after the grace period).
  void StopForNextRound(WorkerGroup& group, const std::string& prefix);
  // Waits up to 20 ms for SIGTERM/SIGINT; on one, stops the workers with it (after the grace
  // period, SIGKILL) and records the stop for every node.
  std::optional<Outcome> CheckSignal(WorkerGroup& group, const std::string& prefix);
  // Elastic rounds, from Watch every 100 ms: this node's keepalive, the other members' (a
  // silent one fails the round), and a node waiting to join (which asks every node to re-form).
  // Returns what ends the round, if anything.
  std::optional<Outcome> WatchMembers(WorkerGroup& group, const std::string& prefix);
  // Records a failure for every node to see (the first one recorded wins) and returns it.
  Outcome Fail(const std::string& prefix, int code, const std::string& what);
  // What this node does on a failure it found: says "<what>: <doing>", records it (first: the
  // others stop now too), stops this node's workers for the next round, and returns it.
  Outcome FailRound(WorkerGroup& group, const std::string& prefix, int code,
                    const std::string& what, const char* doing);
  std::string CheckHeartbeats(int attempt);
  // CheckHeartbeats; a workers' store of the round that is gone fails the round (not the job).
  std::optional<Outcome> WatchHeartbeats(WorkerGroup& group, int attempt,
                                         const std::string& prefix);
  void LeaveLast(std::chrono::seconds patience);
  // The job's one-line verdict ("succeeded", "failed: rank 2 on node 0 exited with code 7; ..."),
  // for the termination message (termination_log.h).
  std::string Verdict(const Outcome& last) const;

  const LaunchPlan& plan_;
  int signal_fd_ = -1;
  std::shared_ptr<collectives::Store> store_;
  std::string store_address_;                // as workers reach it
  bool hosting_ = false;                     // hosts the launchers' store
  std::unique_ptr<RoundServices> services_;  // after OpenStore
  int node_ = -1;
  int nnodes_ = 1;
  int first_rank_ = 0;
  int nproc_ = 0;
  std::map<int, Beat> beats_;
  bool elastic_ = false;                      // --nnodes MIN:MAX
  std::unique_ptr<ElasticMembers> members_;   // elastic
  std::unique_ptr<LauncherMetrics> metrics_;  // COHORT_METRICS_PORT - 1; null when unset
};

void Supervisor::OpenStore() {
  const net::HostPort ep = net::ParseHostPort(plan_.endpoint.value, plan_.endpoint.source, true);
  const bool single = plan_.max_nodes.value == 1;
  const collectives::StoreBackend& backend = collectives::FindStoreBackend(plan_.rdzv_backend);
  if (plan_.host_store.value && backend.hosted_by_launcher) {
    try {
      int port = 0;
      store_ =
          collectives::HostStore(plan_.bind_host, ep.port, plan_.token, RdzvTimeout(plan_), &port);
      hosting_ = true;
      store_address_ = net::HostPort{single ? "127.0.0.1" : ep.host, port}.ToString();
      return;
    } catch (const Unavailable&) {
      // With ranks by arrival, another launcher on this host may have bound the port first.
      if (plan_.node_rank.value >= 0) throw;
    }
  }
  store_ =
      backend.connect({plan_.endpoint.value, plan_.token, plan_.run_id.value, RdzvTimeout(plan_)});
  store_address_ = backend.scheme + plan_.endpoint.value;  // what COHORT_STORE tells workers
}

Outcome Supervisor::Fail(const std::string& prefix, int code, const std::string& what) {
  store_->CompareSet(prefix + "failed", "", fmt::format("{} {}", code, what));
  return {Outcome::kFailed, code, what};
}

Outcome Supervisor::FailRound(WorkerGroup& group, const std::string& prefix, int code,
                              const std::string& what, const char* doing) {
  Say("{}: {}", what, doing);
  const Outcome failed = Fail(prefix, code, what);
  StopForNextRound(group, prefix);
  return failed;
}

std::string Supervisor::CheckHeartbeats(int attempt) {
  if (plan_.heartbeat_timeout.value <= 0) return "";
  const std::string prefix = collectives::Heartbeat::Prefix(plan_.run_id.value, attempt);
  const auto now = Clock::now();
  auto values = services_->workers().store->List(prefix);
  for (int r = first_rank_; r < first_rank_ + nproc_; ++r) {
    auto it = values.find(prefix + std::to_string(r));
    if (it == values.end()) continue;  // never beat: not watched
    Beat& b = beats_[r];
    if (b.value != it->second) b = {it->second, now, std::time(nullptr)};
    const double silent = std::chrono::duration<double>(now - b.changed).count();
    if (metrics_) metrics_->HeartbeatAge(r, silent);
    if (silent > plan_.heartbeat_timeout.value) {
      char when[16];
      std::strftime(when, sizeof(when), "%H:%M:%S", std::localtime(&b.wall));
      return fmt::format(
          "rank {} on node {} stopped heartbeating: last seen at {}, {:.1f} s ago "
          "(--heartbeat-timeout {:g} s)",
          r, node_, when, silent, plan_.heartbeat_timeout.value);
    }
  }
  return "";
}

void Supervisor::StopForNextRound(WorkerGroup& group, const std::string& prefix) {
  if (elastic_) store_->Set(prefix + "rejoin/" + std::to_string(node_), net::Hostname());
  group.Stop(Ms(plan_.grace_period), SIGTERM);
}

std::optional<Outcome> Supervisor::WatchMembers(WorkerGroup& group, const std::string& prefix) {
  const auto end = members_->Check(prefix, nnodes_);
  if (!end) return std::nullopt;
  if (end->lost) return FailRound(group, prefix, 1, end->what, "stopping this node's workers");
  Say("{}: re-forming the group (the workers get SIGTERM and --grace-period {:g} s to save a "
      "snapshot)",
      end->what, plan_.grace_period);
  StopForNextRound(group, prefix);
  return Outcome{Outcome::kReform, 0, end->what};
}

std::optional<Outcome> Supervisor::CheckSignal(WorkerGroup& group, const std::string& prefix) {
  pollfd pfd{signal_fd_, POLLIN, 0};
  signalfd_siginfo info{};
  if (::poll(&pfd, 1, 20) <= 0 || ::read(signal_fd_, &info, sizeof(info)) != sizeof(info)) {
    return std::nullopt;
  }
  const int sig = static_cast<int>(info.ssi_signo);
  Say("received SIG{}: passing it to the workers, which have {:g} s to finish (a checkpoint, "
      "say) before SIGKILL",
      sigabbrev_np(sig), plan_.grace_period);
  for (const WorkerExit& e : group.Stop(Ms(plan_.grace_period), sig)) {
    if (!e.ok()) Say("rank {} {}", e.rank, e.Describe());
  }
  try {
    Fail(prefix, 128 + sig, fmt::format("node {} was stopped by SIG{}", node_, sigabbrev_np(sig)));
  } catch (...) {
  }
  return Outcome{Outcome::kInterrupted, 128 + sig,
                 fmt::format("stopped by SIG{}", sigabbrev_np(sig))};
}

Outcome Supervisor::Watch(WorkerGroup& group, int attempt, const std::string& prefix) {
  bool local_done = false;
  auto next_store_check = Clock::now();
  for (;;) {
    if (auto stopped = CheckSignal(group, prefix)) return *stopped;
    for (const WorkerExit& e : group.Reap()) {
      if (e.ok()) continue;
      // A worker that failed because another node stopped its workers to re-form.
      if (elastic_ && !store_->List(prefix + "reform").empty()) {
        if (auto reform = WatchMembers(group, prefix)) return *reform;
      }
      const std::string what = fmt::format("rank {} on node {} {}", e.rank, node_, e.Describe());
      return FailRound(group, prefix, e.ShellCode(), what, "stopping the other workers");
    }
    if (std::string dead = services_->DeadServer(); !dead.empty()) {
      return FailRound(group, prefix, 1, dead, "stopping the workers");
    }
    if (!local_done && group.Running() == 0) {
      local_done = true;
      store_->Set(prefix + "done/" + std::to_string(node_), "1");
    }
    if (Clock::now() < next_store_check) continue;
    next_store_check = Clock::now() + milliseconds(100);
    auto failed = store_->List(prefix + "failed");
    if (!failed.empty()) {
      const std::string& v = failed.begin()->second;
      const auto space = v.find(' ');
      Say("{}: stopping this node's workers", v.substr(space + 1));
      StopForNextRound(group, prefix);
      return {Outcome::kFailed, std::stoi(v.substr(0, space)), v.substr(space + 1)};
    }
    if (local_done && static_cast<int>(store_->List(prefix + "done/").size()) == nnodes_) {
      return {Outcome::kSuccess, 0, ""};
    }
    if (elastic_) {
      if (auto end = WatchMembers(group, prefix)) return *end;
    }
    if (auto hung = WatchHeartbeats(group, attempt, prefix)) return *hung;
  }
}

std::optional<Outcome> Supervisor::WatchHeartbeats(WorkerGroup& group, int attempt,
                                                   const std::string& prefix) {
  std::string hung;
  try {
    hung = CheckHeartbeats(attempt);
  } catch (const Error& e) {
    if (!services_->OwnWorkersStore()) throw;  // the launchers' store: LostStore
    const std::string what = fmt::format("lost the workers' store that {} hosted: {}",
                                         services_->workers().host, e.what());
    return FailRound(group, prefix, 1, what, "stopping this node's workers");
  }
  if (hung.empty()) return std::nullopt;
  return FailRound(group, prefix, kExitHung, hung, "treating it as failed");
}

Outcome Supervisor::LostStore(const Error& e) {
  // With the store inside node 0's launcher, no round can be coordinated without node 0.
  const bool in_node0 =
      !hosting_ && collectives::FindStoreBackend(plan_.rdzv_backend).hosted_by_launcher;
  Say("lost the rendezvous store{}: {}",
      in_node0 ? fmt::format(" (node 0's launcher at {} hosted it)", plan_.endpoint.value) : "",
      e.what());
  return {
      Outcome::kFailed, kExitRendezvous,
      in_node0 ? "lost node 0, which hosted the rendezvous store" : "lost the rendezvous store"};
}

Outcome Supervisor::RunAttempt(int& round) {
  Assignment a;
  try {
    if (!elastic_) {
      a = JoinNodes(*store_, plan_, round);
    } else if (auto joined = members_->Join(node_, round)) {
      a = *joined;
    } else {
      Say("the job finished before a rendezvous round admitted this node");
      return {Outcome::kSuccess, 0, ""};
    }
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kUnavailable) return LostStore(e);
    Say("rendezvous failed: {}", e.what());
    // The host must outlive the nodes still reading the error it may have posted.
    if (!elastic_) node_ = plan_.node_rank.value;
    nnodes_ = plan_.max_nodes.value;
    return {Outcome::kFailed, kExitRendezvous, fmt::format("rendezvous failed: {}", e.what())};
  }
  const int attempt = round;
  node_ = a.node_id;
  nnodes_ = a.nnodes;
  first_rank_ = a.first_rank;
  nproc_ = a.nproc;
  beats_.clear();
  const std::string prefix = RoundPrefix(plan_.run_id.value, attempt);
  try {
    services_->Open(a, attempt);
  } catch (const Error& e) {
    const bool ps = !services_->WorkersStoreFailed();
    Say("cannot start the {}: {}", ps ? "parameter servers" : "workers' store", e.what());
    Fail(prefix, kExitRendezvous,
         ps ? "the parameter servers did not start" : "the workers' store did not open");
    return {Outcome::kFailed, kExitRendezvous, e.what()};
  }
  std::unique_ptr<WorkerGroup> group;
  try {
    group =
        std::make_unique<WorkerGroup>(MakeWorkerSpecs(plan_, a, attempt, services_->ForWorkers()));
  } catch (const InvalidArgument& e) {
    Say("{}", e.what());
    Fail(prefix, kExitUsage, fmt::format("node {} could not start its workers", node_));
    return {Outcome::kFailed, kExitUsage, e.what()};
  } catch (const Internal& e) {
    // fork or pipe2 failed (out of processes or descriptors, say): a failure of this attempt,
    // which a restart may get past, not the end of the launcher.
    const std::string what =
        fmt::format("node {} could not start its workers: {}", node_, e.what());
    Say("{}", what);
    return Fail(prefix, 1, what);
  }
  Say("attempt {}: started {} worker{} (rank{} {}{}) of a world of {}", attempt + 1, a.nproc,
      a.nproc == 1 ? "" : "s", a.nproc == 1 ? "" : "s", a.first_rank,
      a.nproc == 1 ? "" : fmt::format("..{}", a.first_rank + a.nproc - 1), a.world_size);
  if (!metrics_) metrics_ = LauncherMetrics::FromEnv(node_);
  if (metrics_) metrics_->StartAttempt(attempt, a.nproc);
  try {
    return Watch(*group, attempt, prefix);
  } catch (const Error& e) {
    // The store is gone (node 0's launcher with it, when it hosted it): no round can be
    // coordinated any more.
    Outcome lost = LostStore(e);
    Say("stopping this node's workers");
    group->Stop(Ms(plan_.grace_period), SIGTERM);
    return lost;
  }
}

// The store's host serves until every node has finished with it, up to `patience`.
void Supervisor::LeaveLast(std::chrono::seconds patience) {
  const std::string prefix = fmt::format("cohort/{}/launch/exited/", plan_.run_id.value);
  try {
    const std::string me =
        node_ >= 0 ? std::to_string(node_) : fmt::format("pid-{}", static_cast<int>(::getpid()));
    store_->Set(prefix + me, "1");
    // The host of the launchers' store, or of the last round's workers' store, which the other
    // launchers may still read heartbeats from until they have seen the end.
    if (!(hosting_ || (services_ && services_->hosts())) || nnodes_ <= 1) return;
    const auto deadline = Clock::now() + patience;
    while (static_cast<int>(store_->List(prefix).size()) < nnodes_ && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(50));
    }
  } catch (...) {
  }
}

void Supervisor::BlockStopSignals() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal_fd_ = ::signalfd(-1, &stop, SFD_CLOEXEC);
  ::signal(SIGPIPE, SIG_IGN);
}

std::optional<int> Supervisor::Join() {
  try {
    OpenStore();
    services_ =
        std::make_unique<RoundServices>(plan_, store_, store_address_, hosting_,
                                        [this](const std::string& line) { Say("{}", line); });
    // Elastic: the node keeps one id for the whole job and starts at the newest round (a node
    // that comes while the job runs waits there to be admitted).
    elastic_ = plan_.min_nodes.value != plan_.max_nodes.value;
    // Rounds number the job's attempts, from the COHORT_RESTART this launcher was given (a Job
    // the operator recreated): the workers' COHORT_RESTART, and the store keys of each attempt,
    // so that a pod of the new attempt that reaches a store of the old one (still shutting
    // down) does not take part in the old attempt's rendezvous.
    int round = plan_.first_restart.value;
    if (elastic_) {
      members_ = std::make_unique<ElasticMembers>(
          plan_, store_, hosting_, [this](const std::string& line) { Say("{}", line); });
      node_ = plan_.node_rank.value >= 0
                  ? plan_.node_rank.value
                  : static_cast<int>(
                        store_->Add(fmt::format("cohort/{}/launch/ids", plan_.run_id.value), 1)) -
                        1;
      nnodes_ = plan_.max_nodes.value;
      round = std::max(round, CurrentRound(*store_, plan_.run_id.value));
    }
    return round;
  } catch (const Error& e) {
    Say("cannot reach the rendezvous store: {}", e.what());
    WriteTerminationMessage(fmt::format("failed: cannot reach the rendezvous store: {}", e.what()));
    return std::nullopt;
  }
}

Outcome Supervisor::RunRounds(int round) {
  // Every round after a failure counts against --max-restarts, as torchelastic's max_restarts
  // does (a lost node shows there as its peers' workers failing); a re-forming that admits a
  // waiting node does not, as torchelastic's restart for waiting nodes does not.
  const int attempts = plan_.max_restarts.value + 1;
  int failures = 0;
  for (;; ++round) {
    Outcome last = RunAttempt(round);
    if (last.kind == Outcome::kReform) continue;
    if (last.kind != Outcome::kFailed || last.code == kExitRendezvous || last.code == kExitUsage ||
        failures + 1 == attempts) {
      return last;
    }
    ++failures;
    Say("restarting the group: attempt {} of {} (after: {})", failures + 1, attempts, last.what);
  }
}

int Supervisor::Run() {
  BlockStopSignals();
  const std::optional<int> round = Join();
  if (!round) return kExitRendezvous;
  const Outcome last = RunRounds(*round);
  if (last.kind == Outcome::kSuccess && first_rank_ == 0) {
    for (const std::string& line : FinishStandaloneServers(plan_)) Say("{}", line);
  }
  const std::string verdict = Verdict(last);
  if (last.kind == Outcome::kFailed && last.code != kExitRendezvous && last.code != kExitUsage) {
    Say("{}", verdict);
  }
  // Written before waiting for the other nodes: a pod killed meanwhile still tells why it ended.
  WriteTerminationMessage(verdict);
  // After a failed rendezvous some nodes may never come, so do not wait long for them.
  LeaveLast(last.code == kExitRendezvous ? std::chrono::seconds(3) : std::chrono::seconds(30));
  return last.code;
}

std::string Supervisor::Verdict(const Outcome& last) const {
  if (last.kind != Outcome::kFailed) {
    return last.kind == Outcome::kInterrupted ? last.what : "succeeded";
  }
  if (last.code == kExitRendezvous || last.code == kExitUsage) return "failed: " + last.what;
  // The hint names the setting; none when the environment set 0 (the operator does that: it
  // restarts the Job itself and says so in its own message).
  const Sourced<int>& limit = plan_.max_restarts;
  if (limit.value == 0 && limit.source == env::kMaxRestarts.name()) return "failed: " + last.what;
  return fmt::format("failed: {}; {}", last.what,
                     limit.value == 0
                         ? "no restarts allowed (--max-restarts 0)"
                         : fmt::format("no restarts left (--max-restarts {})", limit.value));
}

}  // namespace

int Supervise(const LaunchPlan& plan) { return Supervisor(plan).Run(); }

}  // namespace cohort::launcher
