#include "launcher/ps_server_command.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "collectives/ps/ps_server.h"
#include "common/env.h"
#include "common/heap.h"
#include "common/log.h"
#include "common/net.h"
#include "launcher/launch_plan.h"
#include "launcher/supervisor.h"

namespace cohort::launcher {
namespace {

struct PsServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;
  int shard = 0;
  int shards = 1;
  std::string token;
  bool token_given = false;
  bool insecure = false;  // serve other machines without a token
};

int RunPsServer(const PsServerOptions& o) {
  const std::string token = o.token_given ? o.token : env::kToken.Str("");
  // No open doors by default: a server other machines can reach must ask for a token.
  if (token.empty() && !net::IsLoopback(o.host) && !o.insecure) {
    std::fprintf(stderr,
                 "cohort ps-server: no token, and --host %s lets anyone on the network take part "
                 "in this job's collectives; %s, or listen on --host 127.0.0.1, or pass --insecure "
                 "on a trusted network\n",
                 o.host.c_str(), TokenAdvice().c_str());
    return kExitUsage;
  }
  // Block the stop signals before gRPC starts its threads, so that only sigwait() gets them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGUSR1);  // from OnFinish: the job is over
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  // Every push and answer is a partition-sized message: keep freed memory for the next one
  // instead of page-faulting it in again (common/heap.h).
  if (env::kMallocTune.Bool(true) && !KeepFreedMemory()) {
    COHORT_WARN(kColl, "mallopt failed; ps-server may page-fault on every push");
  }
  collectives::ps::PsServer server(o.host, o.port, token, o.shard, o.shards);
  const pthread_t main_thread = pthread_self();
  std::mutex mu;
  std::string finished_run;  // set before the signal that wakes the main thread
  server.OnFinish([&mu, &finished_run, main_thread](const std::string& run_id) {
    std::lock_guard<std::mutex> lock(mu);
    finished_run = run_id;
    pthread_kill(main_thread, SIGUSR1);
  });
  server.Start();
  if (token.empty() && !net::IsLoopback(o.host)) {
    COHORT_WARN(kColl,
                "--insecure: no token, anyone who reaches port {} can take part in this job's "
                "collectives; set COHORT_TOKEN (here and in every worker) to require one",
                server.Port());
  }
  std::printf("cohort ps-server shard %d of %d listening on %s (%s)\n", o.shard, o.shards,
              server.Address().c_str(), token.empty() ? "no token" : "token required");
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop, &sig);
  if (sig == SIGUSR1) {
    std::lock_guard<std::mutex> lock(mu);
    std::printf("cohort ps-server shard %d of %d: job %s finished; exiting\n", o.shard, o.shards,
                finished_run.c_str());
    std::fflush(stdout);
  } else {
    COHORT_DEBUG(kColl, "ps-server shard {}: {} received, shutting down", o.shard,
                 ::strsignal(sig));
  }
  server.Shutdown();
  return 0;
}

}  // namespace

Command AddPsServerCommand(CLI::App& parent) {
  auto o = std::make_shared<PsServerOptions>();
  CLI::App* app = parent.add_subcommand(
      "ps-server",
      "Run one shard of the parameter server (backend ps) until the launcher of the job's rank 0 "
      "says the job finished, or SIGINT or SIGTERM");
  app->add_option("-p,--port", o->port, "TCP port to listen on; 0 picks a free one")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app->add_option("--host", o->host, "address to listen on; 0.0.0.0 listens on every interface")
      ->capture_default_str();
  app->add_option("--shard", o->shard, "this server's index, 0..shards-1")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--shards", o->shards, "how many servers the job has")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--token", o->token,
                  "shared secret every call must carry (default: $COHORT_TOKEN). Prefer the env "
                  "variable: other users can read command lines with ps");
  app->add_flag("--insecure,--insecure-store", o->insecure,
                "serve other machines without a token (trusted networks only); refused without it");
  app->footer(
      "Without a token the server listens only on a loopback --host, unless --insecure.\n"
      "Workers find the servers with COHORT_PS_SERVERS=<host>:<port>,... listed in shard order,\n"
      "and the same COHORT_TOKEN. Prints one line with the address once listening.");
  return {app, [app, o] {
            o->token_given = app->count("--token") > 0;
            return RunPsServer(*o);
          }};
}

}  // namespace cohort::launcher
