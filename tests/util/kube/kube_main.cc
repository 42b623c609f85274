// kube-apiserver-double: the Kubernetes API-server test double (kube_double.h) as a process,
// for kubectl and for clients under test that run as processes.
//   kube-apiserver-double [--port 0] [--port-file F] [--history N] [--watch-timeout S]
//                         [--no-jobs] [--work-dir D] [--pod-env K=V]... [--kill-grace-ms MS]
// Prints "listening on http://127.0.0.1:PORT" once it accepts connections (and writes PORT to
// --port-file, atomically); runs until SIGTERM or SIGINT, then kills every pod process.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "tests/util/kube/kube_double.h"

int main(int argc, char** argv) {
  cohort::kube::KubeDoubleOptions o;
  std::string port_file;
  std::vector<std::string> pod_env;
  int watch_timeout = static_cast<int>(o.watch_timeout.count());
  int grace_ms = static_cast<int>(o.kill_grace.count());
  bool no_jobs = false;
  CLI::App app{"Kubernetes API-server test double (plain HTTP on 127.0.0.1)"};
  app.add_option("--port", o.port, "port to listen on; 0 picks a free one")->capture_default_str();
  app.add_option("--port-file", port_file, "write the port to this file once listening");
  app.add_option("--history", o.history, "watch events kept for resumption")->capture_default_str();
  app.add_option("--watch-timeout", watch_timeout,
                 "seconds a watch without timeoutSeconds stays open")
      ->capture_default_str();
  app.add_flag("--no-jobs", no_jobs, "do not play the Job controller (pods never run)");
  app.add_option("--work-dir", o.work_dir, "pods' logs and termination messages (default: /tmp)");
  app.add_option("--pod-env", pod_env, "K=V added to every pod process's environment");
  app.add_option("--kill-grace-ms", grace_ms, "SIGTERM to SIGKILL when a pod is stopped")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  o.watch_timeout = std::chrono::seconds(watch_timeout);
  o.kill_grace = std::chrono::milliseconds(grace_ms);
  o.run_jobs = !no_jobs;
  for (const auto& kv : pod_env) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "kube-apiserver-double: --pod-env " << kv << ": expected KEY=VALUE\n";
      return 2;
    }
    o.pod_env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // every thread; sigwait below takes them
  try {
    cohort::kube::KubeDouble api(o);
    if (!port_file.empty()) {
      const std::string tmp = port_file + ".tmp";
      std::ofstream(tmp) << api.port() << "\n";
      std::rename(tmp.c_str(), port_file.c_str());
    }
    std::cout << "listening on " << api.url() << " (work dir " << api.work_dir() << ")"
              << std::endl;
    int sig = 0;
    sigwait(&stop, &sig);
    std::cout << "stopping on signal " << sig << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "kube-apiserver-double: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
