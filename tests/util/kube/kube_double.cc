#include "tests/util/kube/kube_double.h"

#include <httplib.h>
#include <signal.h>
#include <stdlib.h>

#include <stdexcept>

#include "tests/util/kube/job_controller.h"
#include "tests/util/kube/kubelet.h"

namespace cohort::kube {

KubeDouble::KubeDouble(KubeDoubleOptions options)
    : options_(std::move(options)),
      store_(registry_, options_.history),
      http_(store_, registry_, options_.watch_timeout),
      server_(std::make_unique<httplib::Server>()) {
  // A client that goes away mid-stream must not end the process (cpp-httplib sends without
  // MSG_NOSIGNAL).
  signal(SIGPIPE, SIG_IGN);
  // Every open watch holds a thread: room for many clients at once.
  server_->new_task_queue = [] { return new httplib::ThreadPool(64); };
  server_->set_keep_alive_max_count(1000);
  server_->set_read_timeout(30, 0);
  server_->set_write_timeout(30, 0);
  work_dir_ = options_.work_dir;
  if (work_dir_.empty()) {
    char tmpl[] = "/tmp/kube-double-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("kube double: mkdtemp failed");
    work_dir_ = tmpl;
  }
  port_ = options_.port;
  if (port_ == 0) {
    port_ = server_->bind_to_any_port("127.0.0.1");
  } else if (!server_->bind_to_port("127.0.0.1", port_)) {
    port_ = -1;
  }
  if (port_ <= 0) {
    throw std::runtime_error("kube double: cannot listen on 127.0.0.1:" +
                             std::to_string(options_.port) + " (in use? pass port 0)");
  }
  if (options_.run_jobs) {
    kubelet_ = std::make_unique<Kubelet>(
        store_, registry_, KubeletOptions{work_dir_, options_.pod_env, options_.kill_grace});
    jobs_ = std::make_unique<JobController>(store_, registry_);
    http_.SetPods([this](const std::string& ns, const std::string& n) { return PodPid(ns, n); },
                  [this](const std::string& ns, const std::string& n) {
                    return kubelet_ ? kubelet_->LogPath(ns, n) : std::string();
                  });
    controllers_ = std::thread([this] { RunControllers(); });
  }
  http_.Install(*server_, port_);
  listener_ = std::thread([this] { server_->listen_after_bind(); });
}

void KubeDouble::RunControllers() {
  int64_t seen = -1;
  while (!stop_) {
    seen = store_.WaitForChange(seen, std::chrono::milliseconds(50));
    try {
      jobs_->Sync();
      kubelet_->Sync();
    } catch (const std::exception& e) {
      fprintf(stderr, "kube double: controller pass failed: %s\n", e.what());
    }
  }
  kubelet_.reset();  // here: the pods' processes must be stopped by the thread that started them
}

std::optional<pid_t> KubeDouble::PodPid(const std::string& ns, const std::string& name) const {
  return kubelet_ ? kubelet_->Pid(ns, name) : std::nullopt;
}

KubeDouble::~KubeDouble() {
  http_.Stop();
  store_.DropWatches();
  server_->stop();
  if (listener_.joinable()) listener_.join();
  stop_ = true;
  if (controllers_.joinable()) controllers_.join();
}

}  // namespace cohort::kube
