// The double's kubelet: runs every pod that appears in the store (Pending, not being deleted)
// as a local process (pod_env.h, pod_process.h) and reports it in the pod's status as a kubelet
// would: Running (podIP 127.0.0.1, containerStatuses running), then Succeeded or Failed with the
// container's exit code, reason Completed / Error, and its termination message (the file named
// by COHORT_TERMINATION_LOG in the pod's env; with terminationMessagePolicy
// FallbackToLogsOnError, the log's tail when that file is empty and the container failed). A
// missing Secret or ConfigMap keeps the pod Pending (CreateContainerConfigError), a command that
// cannot start fails it (StartError, exit code 128). A deleted pod's process is stopped
// (SIGTERM, SIGKILL after the grace period). restartPolicy is treated as Never: containers are
// never restarted in place.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tests/util/kube/object_store.h"
#include "tests/util/kube/pod_env.h"
#include "tests/util/kube/pod_process.h"

namespace cohort::kube {

struct KubeletOptions {
  std::string work_dir;                        // <work_dir>/<namespace>/<pod>/{log,termination-log}
  std::map<std::string, std::string> pod_env;  // added to every container's env
  std::chrono::milliseconds kill_grace{3000};
};

class Kubelet {
 public:
  Kubelet(ObjectStore& store, ResourceRegistry& registry, KubeletOptions options);
  ~Kubelet();  // stops every process (SIGTERM, SIGKILL after the grace) and reaps them

  // One pass: start new pods, stop deleted ones, report the ones that ended. Call from one
  // thread only (the processes die with the thread that started them).
  void Sync();
  // The pid (and process group) of a running pod's container; nullopt when none runs.
  std::optional<pid_t> Pid(const std::string& ns, const std::string& name) const;
  // The pod's log file ("" when the pod never ran here).
  std::string LogPath(const std::string& ns, const std::string& name) const;

 private:
  struct Running {
    std::string ns, name, dir;
    std::unique_ptr<PodProcess> process;
    std::string started_at;
    bool deleted = false;
  };
  ObjectStore& store_;
  ResourceRegistry& registry_;
  KubeletOptions options_;
  ServicePorts ports_;
  mutable std::mutex mu_;
  std::map<std::string, Running> running_;  // by pod uid

  void Start(const Json& pod);
  void Report(const Running& r, const PodExit& exit);
  // Applies change to the pod's status (retrying on conflicts); false when the pod is gone.
  bool WriteStatus(const std::string& ns, const std::string& name,
                   const std::function<void(Json& pod)>& change);
  std::vector<std::string> Services(const std::string& ns) const;
};

}  // namespace cohort::kube
