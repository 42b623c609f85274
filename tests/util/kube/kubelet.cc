#include "tests/util/kube/kubelet.h"

#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/utc_time.h"
#include "tests/util/kube/api_error.h"
#include "tests/util/kube/object_rules.h"

namespace cohort::kube {
namespace {

std::string ReadFile(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > limit ? s.substr(0, limit) : s;
}

std::string Tail(const std::string& path, size_t bytes) {
  std::string s = ReadFile(path, 64 << 20);
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

Json Condition(const std::string& type, bool status) {
  return {{"type", type},
          {"status", status ? "True" : "False"},
          {"lastProbeTime", nullptr},
          {"lastTransitionTime", UtcNowRfc3339()}};
}

Json ContainerStatus(const Json& container, const Json& state) {
  return {{"name", container.value("name", "")},   {"ready", false}, {"restartCount", 0},
          {"image", container.value("image", "")}, {"imageID", ""},  {"state", state}};
}

void SetRunning(Json& s, const Json& container, pid_t pid, const std::string& now) {
  s["phase"] = "Running";
  s["hostIP"] = "127.0.0.1";
  s["podIP"] = "127.0.0.1";
  s["podIPs"] = {{{"ip", "127.0.0.1"}}};
  s["startTime"] = now;
  s["conditions"] = {Condition("PodScheduled", true), Condition("Initialized", true),
                     Condition("ContainersReady", true), Condition("Ready", true)};
  Json cs = ContainerStatus(container, {{"running", {{"startedAt", now}}}});
  cs["ready"] = true;
  cs["started"] = true;
  cs["containerID"] = "double://" + std::to_string(pid);
  s["containerStatuses"] = {cs};
}

}  // namespace

Kubelet::Kubelet(ObjectStore& store, ResourceRegistry& registry, KubeletOptions options)
    : store_(store), registry_(registry), options_(std::move(options)) {}

Kubelet::~Kubelet() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [uid, r] : running_) r.process->Stop(options_.kill_grace);
  const auto deadline =
      std::chrono::steady_clock::now() + options_.kill_grace + std::chrono::milliseconds(500);
  for (auto& [uid, r] : running_) {
    while (!r.process->Poll() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  running_.clear();  // ~PodProcess SIGKILLs and reaps what is left
}

std::vector<std::string> Kubelet::Services(const std::string& ns) const {
  std::vector<std::string> names;
  const Json list =
      store_.List(*registry_.Find("", "v1", "services"), ns, LabelSelector(), std::nullopt);
  for (const auto& s : list["items"]) names.push_back(s["metadata"]["name"]);
  return names;
}

bool Kubelet::WriteStatus(const std::string& ns, const std::string& name,
                          const std::function<void(Json& pod)>& change, bool status) {
  const ResourceType pods = *registry_.Find("", "v1", "pods");
  for (int attempt = 0; attempt < 20; ++attempt) {
    try {
      Json pod = store_.Get(pods, ns, name);
      change(pod);
      store_.Update(pods, ns, name, pod, status);
      return true;
    } catch (const ApiError& e) {
      if (e.code() == 404) return false;
      if (e.code() != 409) throw;
    }
  }
  return false;
}

void Kubelet::Start(const Json& pod) {
  const Json& meta = pod["metadata"];
  const std::string ns = meta["namespace"], name = meta["name"], uid = meta["uid"];
  const std::string dir = options_.work_dir + "/" + ns + "/" + name;
  mkdir((options_.work_dir + "/" + ns).c_str(), 0755);
  mkdir(dir.c_str(), 0755);
  const ObjectLookup lookup = [this](const std::string& plural, const std::string& lns,
                                     const std::string& lname) -> std::optional<Json> {
    try {
      return store_.Get(*registry_.Find("", "v1", plural), lns, lname);
    } catch (const ApiError&) {
      return std::nullopt;
    }
  };
  PodCommand cmd = ResolvePodCommand(pod, Services(ns), lookup, ports_);
  const Json container =
      pod["spec"]["containers"].empty() ? Json::object() : pod["spec"]["containers"][0];
  if (!cmd.error.empty() && cmd.error.find("not found") != std::string::npos) {
    // A missing Secret or ConfigMap: stays Pending, tried again on the next pass.
    WriteStatus(ns, name, [&](Json& p) {
      p["status"]["containerStatuses"] = {ContainerStatus(
          container,
          {{"waiting", {{"reason", "CreateContainerConfigError"}, {"message", cmd.error}}}})};
    });
    return;
  }
  for (const auto& [k, v] : options_.pod_env) cmd.env.emplace(k, v);
  cmd.env["COHORT_TERMINATION_LOG"] = dir + "/termination-log";
  std::unique_ptr<PodProcess> process;
  std::string error = cmd.error;
  if (error.empty()) {
    try {
      process = std::make_unique<PodProcess>(cmd.argv, cmd.env, dir);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  const std::string now = UtcNowRfc3339();
  if (!process) {
    WriteStatus(ns, name, [&](Json& p) {
      p["status"]["phase"] = "Failed";
      p["status"]["containerStatuses"] = {ContainerStatus(container, {{"terminated",
                                                                       {{"exitCode", 128},
                                                                        {"reason", "StartError"},
                                                                        {"message", error},
                                                                        {"startedAt", now},
                                                                        {"finishedAt", now}}}})};
    });
    return;
  }
  const pid_t pid = process->pid();
  running_[uid] = {ns, name, dir, std::move(process), now, false};
  HoldWhileRunning(ns, name, true);
  WriteStatus(ns, name, [&](Json& p) { SetRunning(p["status"], container, pid, now); });
}

void Kubelet::HoldWhileRunning(const std::string& ns, const std::string& name, bool hold) {
  WriteStatus(
      ns, name,
      [hold](Json& p) {
        Json kept = Json::array();
        for (const Json& f : p["metadata"].value("finalizers", Json::array()))
          if (f != kProcessFinalizer) kept.push_back(f);
        if (hold) kept.push_back(kProcessFinalizer);
        if (kept.empty()) {
          p["metadata"].erase("finalizers");
        } else {
          p["metadata"]["finalizers"] = kept;
        }
      },
      false);
}

void Kubelet::Report(const Running& r, const PodExit& exit) {
  std::string message = ReadFile(r.dir + "/termination-log", 4096);
  WriteStatus(r.ns, r.name, [&](Json& p) {
    const Json container = p["spec"]["containers"][0];
    if (message.empty() && exit.exit_code != 0 &&
        container.value("terminationMessagePolicy", "File") == "FallbackToLogsOnError") {
      message = Tail(r.dir + "/log", 2048);
    }
    Json& s = p["status"];
    s["phase"] = exit.exit_code == 0 ? "Succeeded" : "Failed";
    s["conditions"] = {Condition("PodScheduled", true), Condition("Initialized", true),
                       Condition("ContainersReady", false), Condition("Ready", false)};
    Json terminated = {{"exitCode", exit.exit_code},
                       {"reason", exit.exit_code == 0 ? "Completed" : "Error"},
                       {"startedAt", r.started_at},
                       {"finishedAt", UtcNowRfc3339()},
                       {"containerID", s["containerStatuses"][0].value("containerID", "")}};
    if (exit.signal) terminated["signal"] = exit.signal;
    if (!message.empty()) terminated["message"] = message;
    Json& cs = s["containerStatuses"][0];
    cs["ready"] = false;
    cs["started"] = false;
    cs["state"] = {{"terminated", terminated}};
  });
}

void Kubelet::Sync() {
  std::lock_guard<std::mutex> lock(mu_);
  const Json pods =
      store_.List(*registry_.Find("", "v1", "pods"), "", LabelSelector(), std::nullopt);
  std::set<std::string> present;
  for (const auto& pod : pods["items"]) {
    const std::string uid = pod["metadata"]["uid"];
    present.insert(uid);
    const bool deleting = pod["metadata"].contains("deletionTimestamp");
    if (!running_.count(uid) && !deleting && pod["status"].value("phase", "") == "Pending") {
      Start(pod);
    } else if (deleting && running_.count(uid)) {
      running_[uid].process->Stop(options_.kill_grace);
    }
  }
  for (auto it = running_.begin(); it != running_.end();) {
    Running& r = it->second;
    if (!present.count(it->first) && !r.deleted) {
      r.deleted = true;
      r.process->Stop(options_.kill_grace);
    }
    if (auto exit = r.process->Poll()) {
      if (!r.deleted) {
        Report(r, *exit);
        HoldWhileRunning(r.ns, r.name, false);  // a deleted pod goes now
      }
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

std::optional<pid_t> Kubelet::Pid(const std::string& ns, const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [uid, r] : running_) {
    if (r.ns == ns && r.name == name && !r.deleted) return r.process->pid();
  }
  return std::nullopt;
}

std::string Kubelet::LogPath(const std::string& ns, const std::string& name) const {
  const std::string path = options_.work_dir + "/" + ns + "/" + name + "/log";
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? path : "";
}

}  // namespace cohort::kube
