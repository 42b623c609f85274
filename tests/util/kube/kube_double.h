// A Kubernetes API-server test double: Kubernetes' real REST protocol over plain HTTP on
// 127.0.0.1, real enough that kubectl 1.32 (`kubectl --server http://127.0.0.1:PORT`) applies,
// gets and deletes objects through it, for tests of clients (the operator, kubectl) where no
// real API server can run.
//
// Implements:
// - discovery: /version, /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version> (the
//   unaggregated documents, which kubectl 1.32 accepts), with the groups of the CRDs that
//   exist;
// - namespaces, pods, services, secrets (stringData), configmaps, serviceaccounts, events,
//   batch/v1 jobs, apps/v1 deployments, coordination.k8s.io/v1 leases, rbac roles and bindings,
//   customresourcedefinitions, and every custom resource a CRD defines (served versions, scope,
//   status subresource, pruning, defaults and OpenAPI validation against its schema, printer
//   columns);
// - get, list (labelSelector: =, ==, !=, in, notin, exists; fieldSelector: metadata.name,
//   metadata.namespace), create (generateName, 409 AlreadyExists, 404 for a missing namespace),
//   update (409 Conflict on a stale resourceVersion; no-op writes keep it), patch (merge,
//   JSON and, for built-in types, strategic merge), the /status subresource, delete (Orphan,
//   Background, Foreground through ownerReferences; batch/v1 Jobs default to Orphan as the real
//   server; finalizers), deletecollection; metadata uid, creationTimestamp, generation (bumped on
//   spec changes), one global resourceVersion;
// - watch (?watch=true): a chunked stream of {"type":...,"object":...} lines; resourceVersion ""
//   or "0" starts with ADDED for what exists; N replays what came after N from a bounded
//   history; older than the history: an ERROR event with a 410 Expired Status; timeoutSeconds;
// - errors as meta/v1 Status objects; Table answers for `kubectl get`;
// - the Job controller (job_controller.h) and a kubelet (kubelet.h): pods (of Jobs or not)
//   run their first container's command as a local process, with the env Kubernetes gives
//   it, Service names mapped to 127.0.0.1, COHORT_TERMINATION_LOG for the termination message;
//   a deleted pod whose process runs stays Terminating (deletionTimestamp, and the double's
//   finalizer kube-double.cohort.dev/process) until the process has ended (SIGTERM, then
//   SIGKILL after kill_grace), then goes, as a real kubelet's pods do;
// - OpenAPI: /openapi/v3 documents that tell kubectl the server validates (kubectl then sends
//   fieldValidation=Strict and needs no --validate=false), an empty /openapi/v2.
// Does not implement: TLS and authentication (any client is admin), schemas of built-in types
// (their unknown fields are kept, not rejected), server-side apply and dryRun (answer 415 /
// 400), protobuf (JSON only: kubectl's typed commands such as `kubectl create namespace`
// send protobuf and get 415; use kubectl apply), list paging (`limit` ignored: one page), watch
// bookmarks, Table watches (`kubectl get -w`), admission webhooks, CEL validation rules, a scheduler
// or nodes, in-place container restarts (restartPolicy acts as Never), and controllers other than
// the Job controller and the kubelet (no ReplicaSets for Deployments; owned objects are deleted
// in the same request, not later by a garbage collector). All pods share 127.0.0.1: two pods
// that listen on the same fixed port collide (Service host:port pairs in env values and
// arguments are mapped to distinct ports, bare port numbers are not).
//
// Starting it from a test, in process:
//   cohort::kube::KubeDouble api;                 // listens on 127.0.0.1, a free port
//   api.url();                                    // "http://127.0.0.1:PORT"
//   api.store().Compact(); api.store().DropWatches();
// or as a process: build/bin/kube-apiserver-double --port 0 --port-file F (prints
// "listening on http://127.0.0.1:PORT"; the port is written to F); see kube_main.cc for flags.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/kube/http_api.h"
#include "tests/util/kube/object_store.h"
#include "tests/util/kube/resource_types.h"

namespace httplib {
class Server;
}

namespace cohort::kube {

class JobController;
class Kubelet;

struct KubeDoubleOptions {
  int port = 0;                             // 0: a free one
  size_t history = 1000;                    // watch events kept for resumption
  std::chrono::seconds watch_timeout{300};  // for watches that give no timeoutSeconds
  bool run_jobs = true;                     // play the Job controller
  std::string work_dir;  // pods' logs and termination messages; "" = a new /tmp dir
  std::map<std::string, std::string> pod_env;  // added to every pod process's environment
  std::chrono::milliseconds kill_grace{3000};  // SIGTERM to SIGKILL when stopping a pod
};

class KubeDouble {
 public:
  explicit KubeDouble(KubeDoubleOptions options = {});  // listening when it returns
  ~KubeDouble();  // stops the server and kills every pod process
  KubeDouble(const KubeDouble&) = delete;
  KubeDouble& operator=(const KubeDouble&) = delete;

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  ObjectStore& store() { return store_; }
  ResourceRegistry& registry() { return registry_; }
  HttpApi& http() { return http_; }
  const std::string& work_dir() const { return work_dir_; }
  // The pid (and process group) of a running pod's process; nullopt when none runs.
  std::optional<pid_t> PodPid(const std::string& ns, const std::string& name) const;

 private:
  KubeDoubleOptions options_;
  ResourceRegistry registry_;
  ObjectStore store_;
  HttpApi http_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  int port_ = 0;
  std::string work_dir_;
  // The controllers' thread: the Job controller and the kubelet, whose processes die with it.
  std::thread controllers_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<Kubelet> kubelet_;
  std::unique_ptr<JobController> jobs_;
  void RunControllers();
};

}  // namespace cohort::kube
