#include "launcher/store_command.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "collectives/store/grpc_store_server.h"
#include "common/env.h"
#include "common/log.h"
#include "common/net.h"
#include "launcher/launch_plan.h"
#include "launcher/supervisor.h"

namespace cohort::launcher {
namespace {

struct StoreOptions {
  std::string host = "0.0.0.0";
  int port = 29500;  // torchrun's default MASTER_PORT
  std::string token;
  bool token_given = false;
  bool insecure = false;  // serve other machines without a token
};

// The host workers should put in COHORT_STORE: this machine's name when listening everywhere.
std::string AdvertisedHost(const std::string& host) {
  if (host != "0.0.0.0" && host != "::" && host != "[::]") return host;
  return net::Hostname();
}

int RunStore(const StoreOptions& options) {
  const std::string token = options.token_given ? options.token : env::kToken.Str("");
  // No open doors by default: a store other machines can reach must ask for a token.
  if (token.empty() && !net::IsLoopback(options.host) && !options.insecure) {
    std::fprintf(stderr,
                 "cohort store: no token, and --host %s lets anyone on the network read and write "
                 "this store; %s, or listen on --host 127.0.0.1, or pass --insecure on a trusted "
                 "network\n",
                 options.host.c_str(), TokenAdvice().c_str());
    return kExitUsage;
  }
  // Block the stop signals before gRPC starts its threads, so that they inherit the mask and
  // only sigwait() below receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  collectives::GrpcStoreServer server(options.host, options.port, token);
  server.Start();
  if (token.empty() && !net::IsLoopback(options.host)) {
    COHORT_WARN(kStore,
                "--insecure: no token, anyone who reaches port {} can read and write this store; "
                "set COHORT_TOKEN (here and in every worker) to require one",
                server.Port());
  }
  const net::HostPort advertised{AdvertisedHost(options.host), server.Port()};
  std::printf("cohort store listening on %s (%s); workers: COHORT_STORE=%s\n",
              server.Address().c_str(), token.empty() ? "no token" : "token required",
              advertised.ToString().c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop, &sig);
  COHORT_INFO(kStore, "{} received, shutting down", ::strsignal(sig));
  server.Shutdown();
  return 0;
}

}  // namespace

Command AddStoreCommand(CLI::App& parent) {
  auto options = std::make_shared<StoreOptions>();
  CLI::App* app =
      parent.add_subcommand("store", "Run a standalone rendezvous store until SIGINT or SIGTERM");
  app->add_option("-p,--port", options->port, "TCP port to listen on; 0 picks a free one")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app->add_option("--host", options->host,
                  "address to listen on; 0.0.0.0 listens on every interface")
      ->capture_default_str();
  app->add_option("--token", options->token,
                  "shared secret every call must carry (default: $COHORT_TOKEN). Prefer the env "
                  "variable: other users can read command lines with ps");
  app->add_flag("--insecure,--insecure-store", options->insecure,
                "serve other machines without a token (trusted networks only); refused without it");
  app->footer(
      "Workers find the store with COHORT_STORE=<host>:<port> and the same COHORT_TOKEN.\n"
      "Without a token the store listens only on a loopback --host (127.0.0.1), unless --insecure.\n"
      "Prints one line with the address once listening; logs go to stderr.");
  return {app, [app, options] {
            options->token_given = app->count("--token") > 0;
            return RunStore(*options);
          }};
}

}  // namespace cohort::launcher
