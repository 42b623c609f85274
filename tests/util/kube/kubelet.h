// The double's kubelet: runs every pod that appears in the store (Pending, not being deleted)
// as a local process (pod_env.h, pod_process.h) and reports it in the pod's status as a kubelet
// would: Running (podIP 127.0.0.1, containerStatuses running), then Succeeded or Failed with the
// container's exit code, reason Completed / Error, and its termination message (the file named
// by COHORT_TERMINATION_LOG in the pod's env; with terminationMessagePolicy
// FallbackToLogsOnError, the log's tail when that file is empty and the container failed). A
// missing Secret or ConfigMap keeps the pod Pending (CreateContainerConfigError), a command that
// cannot start fails it (StartError, exit code 128). A deleted pod's process is stopped
// (SIGTERM, SIGKILL after the grace period) and the pod stays, Terminating, until it has ended
// (it carries the finalizer kProcessFinalizer meanwhile). restartPolicy is treated as Never: containers are
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

// The finalizer on a pod whose process runs (graceful deletion, Kubelet::HoldWhileRunning).
inline constexpr const char* kProcessFinalizer = "kube-double.cohort.dev/process";

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
  // Changes the pod (its status with status = true, else the rest) and writes it back,
  // retrying conflicts; false when the pod is gone.
  bool WriteStatus(const std::string& ns, const std::string& name,
                   const std::function<void(Json& pod)>& change, bool status = true);
  // Graceful deletion: a pod whose process runs carries kProcessFinalizer, so that deleting it
  // leaves it Terminating (deletionTimestamp set) until the process has ended, as a real
  // kubelet's pods stay until their containers stopped; then the finalizer goes, and the pod.
  void HoldWhileRunning(const std::string& ns, const std::string& name, bool hold);
  std::vector<std::string> Services(const std::string& ns) const;
};

}  // namespace cohort::kube
