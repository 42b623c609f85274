// Rendezvous benchmark (issue 3): how long N workers take to join one group through one store.
// One GrpcStoreServer on 127.0.0.1; N simulated workers, each with its OWN GrpcStoreClient, wait
// for a common start signal and then run JoinGroup under a fresh scope. Measured: start signal ->
// the last worker has returned from JoinGroup.
//   calls:   1 = Store::Join in one round trip (the server counts and waits), as workers do;
//            3 = the baseline, Store::Join's default over the same client: CompareSet of its
//            key, Add to a counter (the last arrival also Sets "all"), Get of "all". --calls 1,3
//            (default) runs both, alternating, and prints the ratio 3-call / 1-call time.
//   table:   the same sequence straight on a KvTable, one thread, no gRPC: the store's own
//            algorithmic cost.
//   threads: N threads in this process. gRPC shares ONE connection among the channels of a
//            process that name the same address (see `conns`); --spread gives each its own.
//   procs:   N processes (this binary, posix_spawn'ed in worker mode, talking through pipes).
//   etcd:    N threads, each with its own EtcdStore, through the etcd at --etcd host:port
//            (start one: etcd --data-dir D --listen-client-urls http://127.0.0.1:2379
//            --advertise-client-urls http://127.0.0.1:2379).
//   nodes:   what `cohort launch` does for N workers on N / --local nodes: that many simulated
//            launchers (threads, each its own client) run the launcher's JoinNodes, through the
//            gRPC store (variant "nodes") and, with --etcd, through etcd ("nodes-etcd"); the
//            workers then join through a gRPC store (the launcher-hosted one, or the round's
//            workers' store that node 0 hosts with etcd): the "threads" rows at N.
//   warm: each client is connected, and has made one call, before the signal.
//   cold: each creates and connects its client after the signal (a freshly started worker).
// `cpu ms` is the CPU spent by all involved during the join; `store cpu` the store's share.
// --hold S pauses S seconds before the signal (procs), to attach a profiler (perf record -a).
//   build/bin/rendezvous_bench [--sizes 64,128,256,512] [--proc-sizes 64,128] [--calls 1,3]
//                              [--json out.json]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "bench/rendezvous_procs.h"
#include "collectives/rendezvous.h"
#include "collectives/store/etcd_store.h"
#include "collectives/store/grpc_store_server.h"
#include "collectives/store/kv_table.h"
#include "common/error.h"
#include "common/net.h"
#include "launcher/launch_plan.h"
#include "launcher/node_rendezvous.h"

namespace cohort::bench {
namespace {

using namespace collectives;
using Millis = std::chrono::milliseconds;

struct Options {
  std::vector<int> sizes = {64, 128, 256, 512};
  std::vector<int> proc_sizes = {64, 128};
  std::vector<std::string> variants = {"table", "threads", "procs"};
  std::string etcd;  // host:port of an etcd for the etcd rows
  std::vector<std::string> modes = {"warm", "cold"};
  std::vector<int> calls = {1, 3};
  int local = 8;  // nodes: workers per simulated node
  int reps = 5;
  double timeout_s = 60;
  bool spread = false;
  double hold_s = 0;
  std::string json;
  bool worker = false;  // a process of the procs variant
  ProcRun worker_run;
  int worker_rank = 0;
};

// A store whose Join is Store::Join's default, three calls through `inner` (the baseline rows).
class ThreeCallJoin : public Store {
 public:
  explicit ThreeCallJoin(Store& inner) : inner_(inner) {}
  void Set(const std::string& k, const std::string& v) override { inner_.Set(k, v); }
  std::string Get(const std::string& k, Millis t) override { return inner_.Get(k, t); }
  int64_t Add(const std::string& k, int64_t d) override { return inner_.Add(k, d); }
  std::string CompareSet(const std::string& k, const std::string& e,
                         const std::string& d) override {
    return inner_.CompareSet(k, e, d);
  }
  bool Delete(const std::string& k) override { return inner_.Delete(k); }
  void Wait(const std::vector<std::string>& k, Millis t) override { inner_.Wait(k, t); }
  std::map<std::string, std::string> List(const std::string& p) override { return inner_.List(p); }

 private:
  Store& inner_;
};

// Simulated worker r's store client; warm: connected, and one call made.
using MakeClient = std::function<std::unique_ptr<Store>(int r, bool warm)>;

// gRPC clients of the bench's store. spread: thread r talks to 127.0.x.y (server on 0.0.0.0), so
// that gRPC cannot share one connection among the clients of this process as it does for equal
// addresses.
MakeClient GrpcClients(const std::string& token, int port, bool spread) {
  return [=](int r, bool warm) -> std::unique_ptr<Store> {
    const std::string addr = spread ? fmt::format("127.0.{}.{}:{}", r / 250, 1 + r % 250, port)
                                    : "127.0.0.1:" + std::to_string(port);
    return ConnectClient(addr, token, warm);
  };
}

// EtcdStore clients of the etcd at endpoint (each its own connection pool).
MakeClient EtcdClients(const std::string& endpoint) {
  return [=](int, bool warm) -> std::unique_ptr<Store> {
    auto c = std::make_unique<EtcdStore>(endpoint, EtcdStore::KeyPrefix("rdzv-bench"));
    c->Connect(std::chrono::seconds(30));
    if (warm) c->List("rdzv/warm-up/");
    return c;
  };
}

// What simulated member r does with its client once the signal came.
using JoinFn = std::function<void(Store& store, int r)>;

// n threads, each with its own client from make, run join after one start signal; port: the
// server's, to count its connections.
Sample RunThreads(const MakeClient& make, int port, int n, bool cold, const JoinFn& join) {
  std::vector<std::unique_ptr<Store>> clients(n);
  if (!cold) {
    for (int r = 0; r < n; ++r) clients[r] = make(r, true);
  }
  std::mutex mu;
  std::condition_variable cv;
  int ready = 0;
  bool go = false;
  std::vector<int64_t> done(n, 0);
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      {
        std::unique_lock<std::mutex> lock(mu);
        ++ready;
        cv.notify_all();
        cv.wait(lock, [&] { return go; });
      }
      try {
        if (cold) clients[r] = make(r, false);
        join(*clients[r], r);
        done[r] = NowNs();
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  int64_t t0;
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return ready == n; });
    t0 = NowNs();
    go = true;
  }
  const double cpu0 = CpuMs(CLOCK_PROCESS_CPUTIME_ID);
  cv.notify_all();
  for (auto& t : threads) t.join();
  const double cpu = CpuMs(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
  for (const auto& e : errors) {
    if (!e.empty()) throw Internal("a simulated worker failed: " + e);
  }
  const int conns = CountConnections(port);
  return {(*std::max_element(done.begin(), done.end()) - t0) / 1e6, conns, cpu};
}

// Workers: JoinGroup of n ranks under scope (three_calls: through Store::Join's default).
JoinFn WorkersJoin(const std::string& scope, int n, bool three_calls, Millis timeout) {
  return [=](Store& client, int r) {
    ThreeCallJoin baseline(client);
    Store& store = three_calls ? static_cast<Store&>(baseline) : client;
    JoinGroup(store, scope, r, n, timeout, "bench");
  };
}

// Launchers: node r of m runs the launcher's JoinNodes for run `run`, `local` workers each.
JoinFn NodesJoin(const std::string& run, const std::string& endpoint, const std::string& backend,
                 int m, int local, double timeout_s) {
  return [=](Store& store, int r) {
    launcher::LaunchPlan plan;
    plan.nproc_per_node = {local, "bench"};
    plan.min_nodes = plan.max_nodes = {m, "bench"};
    plan.node_rank = {r, "bench"};
    plan.endpoint = {endpoint, "bench"};
    plan.run_id = {run, "bench"};
    plan.rdzv_backend = backend;
    plan.bind_host = "127.0.0.1";
    plan.rdzv_timeout = timeout_s;
    const launcher::Assignment a = launcher::JoinNodes(store, plan, 0);
    if (a.world_size != m * local || a.first_rank != r * local) {
      throw Internal(fmt::format("node {}: world {} first rank {}", r, a.world_size, a.first_rank));
    }
  };
}

// JoinGroup's sequence for n ranks straight on a table (what the server runs for each Join):
// ArriveAt (CompareSet of its key, Add to the count, the last one Sets "all"), then a watch of
// "all".
Sample RunTable(int n) {
  KvTable table;
  const std::string prefix = "cohort/rdzv-table/0/comm/world/join/";
  std::atomic<int> fired{0};
  const int64_t t0 = NowNs();
  for (int r = 0; r < n; ++r) {
    ArriveAt(table, prefix, r, n, std::to_string(NowNs()));
    table.Watch({prefix + "all"}, KvTable::DeadlineAfter(std::chrono::seconds(60)),
                [&](KvTable::WatchResult) { fired.fetch_add(1); });
  }
  const double ms = (NowNs() - t0) / 1e6;
  if (fired.load() != n) throw Internal("table: not every watch fired");
  return {ms, 0, ms};
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * (v.size() - 1) + 0.5)];
}

bool Has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"Rendezvous benchmark: N workers joining one group through one gRPC store"};
  app.add_option("--sizes", o.sizes, "world sizes of table and threads")->delimiter(',');
  app.add_option("--proc-sizes", o.proc_sizes, "world sizes of procs")->delimiter(',');
  app.add_option("--variants", o.variants, "table, threads, procs, etcd, nodes")->delimiter(',');
  app.add_option("--local", o.local, "nodes: workers per simulated node")
      ->check(CLI::PositiveNumber);
  app.add_option("--etcd", o.etcd, "etcd rows: host:port of an etcd (etcd --listen-client-urls)");
  app.add_option("--modes", o.modes, "warm, cold")->delimiter(',');
  app.add_option("--calls", o.calls, "threads: 1 (one-call Join), 3 (the three-call baseline)")
      ->delimiter(',');
  app.add_option("--reps", o.reps, "repetitions of each row")->check(CLI::PositiveNumber);
  app.add_option("--timeout", o.timeout_s, "JoinGroup timeout, seconds");
  app.add_flag("--spread", o.spread, "threads: one connection each (the store listens on 0.0.0.0)");
  app.add_option("--hold", o.hold_s, "procs: seconds between all ready and the start signal");
  app.add_option("--json", o.json, "write the results here");
  app.add_flag("--worker", o.worker)->group("");
  app.add_option("--store", o.worker_run.addr)->group("");
  app.add_option("--scope", o.worker_run.scope)->group("");
  app.add_option("--rank", o.worker_rank)->group("");
  app.add_option("--size", o.worker_run.n)->group("");
  app.add_flag("--cold", o.worker_run.cold)->group("");
  CLI11_PARSE(app, argc, argv);
  if (o.worker) {
    o.worker_run.timeout_s = o.timeout_s;
    return RunProcWorker(o.worker_run, o.worker_rank);
  }
  for (const auto& m : o.modes) {
    if (m != "warm" && m != "cold") throw InvalidArgument("--modes: warm or cold, not " + m);
  }
  for (int c : o.calls) {
    if (c != 1 && c != 3) throw InvalidArgument(fmt::format("--calls: 1 or 3, not {}", c));
  }

  std::random_device rd;
  const std::string token = fmt::format("{:08x}{:08x}{:08x}", rd(), rd(), rd());
  setenv("COHORT_TOKEN", token.c_str(), 1);  // for the worker processes
  GrpcStoreServer server(o.spread ? "0.0.0.0" : "127.0.0.1", 0, token);
  server.Start();
  const int port = server.Port();
  const Millis timeout(static_cast<int64_t>(o.timeout_s * 1000));

  // Every row, then the repetitions round-robin over the rows, so that slow phases of this
  // machine spread over all rows instead of hitting one.
  struct Row {
    std::string variant, mode;
    int n;
    int calls;  // store round trips per rank: 1 (Join) or 3 (the baseline); 0 for the table
    std::vector<Sample> samples;
  };
  std::vector<Row> rows;
  if (Has(o.variants, "table")) {
    for (int n : o.sizes) rows.push_back({"table", "-", n, 0, {}});
  }
  for (const auto& mode : o.modes) {
    if (Has(o.variants, "threads")) {
      for (int n : o.sizes) {
        for (int c : o.calls) rows.push_back({o.spread ? "threads*" : "threads", mode, n, c, {}});
      }
    }
    if (Has(o.variants, "procs")) {
      for (int n : o.proc_sizes) rows.push_back({"procs", mode, n, 1, {}});
    }
    if (Has(o.variants, "etcd")) {
      if (o.etcd.empty()) throw InvalidArgument("--variants etcd needs --etcd host:port");
      for (int n : o.sizes) {
        for (int c : o.calls) rows.push_back({"etcd", mode, n, c, {}});
      }
    }
    if (Has(o.variants, "nodes")) {
      for (int n : o.sizes) {
        rows.push_back({"nodes", mode, n, 1, {}});
        if (!o.etcd.empty()) rows.push_back({"nodes-etcd", mode, n, 1, {}});
      }
    }
  }
  int serial = 0;
  for (int rep = 0; rep < o.reps; ++rep) {
    fmt::print(stderr, "round {}/{}\n", rep + 1, o.reps);
    for (Row& row : rows) {
      const std::string scope =
          fmt::format("cohort/rdzv-bench/{}-{}/comm/{}-{}-{}", token.substr(0, 8), serial++,
                      row.variant, row.mode, row.n);  // unique per run: etcd keeps its keys
      const bool cold = row.mode == "cold";
      if (row.variant == "table") {
        row.samples.push_back(RunTable(row.n));
      } else if (row.variant == "procs") {
        ProcRun run{
            "127.0.0.1:" + std::to_string(port), port, scope, row.n, cold, o.timeout_s, o.hold_s};
        row.samples.push_back(RunProcs(run));
      } else if (row.variant == "etcd") {
        const int etcd_port = net::ParseHostPort(o.etcd, "--etcd").port;
        row.samples.push_back(RunThreads(EtcdClients(o.etcd), etcd_port, row.n, cold,
                                         WorkersJoin(scope, row.n, row.calls == 3, timeout)));
      } else if (row.variant == "nodes" || row.variant == "nodes-etcd") {
        const bool etcd = row.variant == "nodes-etcd";
        const int m = std::max(1, row.n / o.local);
        const std::string endpoint = etcd ? o.etcd : "127.0.0.1:" + std::to_string(port);
        const std::string run = fmt::format("rdzv-bench-{}-{}", token.substr(0, 8), serial);
        row.samples.push_back(
            RunThreads(etcd ? EtcdClients(o.etcd) : GrpcClients(token, port, o.spread),
                       net::ParseHostPort(endpoint, "--etcd").port, m, cold,
                       NodesJoin(run, endpoint, etcd ? "etcd" : "grpc", m, o.local, o.timeout_s)));
      } else {
        row.samples.push_back(RunThreads(GrpcClients(token, port, o.spread), port, row.n, cold,
                                         WorkersJoin(scope, row.n, row.calls == 3, timeout)));
      }
    }
  }

  fmt::print(
      "\nrendezvous: N workers, each with its own store client, run JoinGroup after one start "
      "signal;\ntime = start signal -> last joined; {} rounds over all rows (median, min, max)\n"
      "{}\n",
      o.reps, o.spread ? "threads*: one connection per thread (--spread)" : "");
  if (Has(o.variants, "nodes")) {
    fmt::print(
        "nodes rows: N workers on N/{} simulated launchers; time = the launchers' JoinNodes "
        "(the workers' join after it: the threads rows)\n",
        o.local);
  }
  fmt::print("{:>10} {:>5} {:>4} {:>5} {:>10} {:>8} {:>8} {:>6} {:>8} {:>9} {:>7}\n", "variant",
             "mode", "N", "calls", "median ms", "min ms", "max ms", "conns", "cpu ms", "store cpu",
             "3c/1c");
  auto median_of = [&](const Row& r) {
    std::vector<double> ms;
    for (const Sample& s : r.samples) ms.push_back(s.ms);
    return Percentile(ms, 0.5);
  };
  // The baseline's time over the one-call time, on the one-call row when both ran.
  auto ratio = [&](const Row& row) -> std::string {
    if (row.calls != 1) return "-";
    for (const Row& other : rows) {
      if (other.calls == 3 && other.variant == row.variant && other.mode == row.mode &&
          other.n == row.n) {
        return fmt::format("{:.2f}x", median_of(other) / median_of(row));
      }
    }
    return "-";
  };
  nlohmann::json out = nlohmann::json::array();
  for (const Row& row : rows) {
    std::vector<double> ms, cpu, store_cpu;
    for (const Sample& s : row.samples) {
      ms.push_back(s.ms);
      cpu.push_back(s.cpu_ms);
      store_cpu.push_back(s.store_cpu_ms);
    }
    const double med = Percentile(ms, 0.5), lo = Percentile(ms, 0), hi = Percentile(ms, 1);
    const double store = Percentile(store_cpu, 0.5), cpu_med = Percentile(cpu, 0.5);
    const int conns = row.samples.back().conns;
    fmt::print("{:>10} {:>5} {:>4} {:>5} {:>10.1f} {:>8.1f} {:>8.1f} {:>6} {:>8.1f} {:>9} {:>7}\n",
               row.variant, row.mode, row.n, row.calls == 0 ? "-" : std::to_string(row.calls), med,
               lo, hi, row.variant == "table" ? "-" : std::to_string(conns), cpu_med,
               store < 0 ? "-" : fmt::format("{:.1f}", store), ratio(row));
    out.push_back({{"variant", row.variant},
                   {"mode", row.mode},
                   {"n", row.n},
                   {"calls", row.calls},
                   {"reps", o.reps},
                   {"median_ms", med},
                   {"min_ms", lo},
                   {"max_ms", hi},
                   {"samples_ms", ms},
                   {"connections", conns},
                   {"cpu_ms_median", cpu_med},
                   {"store_cpu_ms_median", store < 0 ? nlohmann::json() : nlohmann::json(store)}});
  }
  if (!o.json.empty()) {
    nlohmann::json doc = {
        {"benchmark", "rendezvous"},
        {"how",
         "N workers (threads or processes), each with its own GrpcStoreClient, run "
         "JoinGroup after one start signal; time = signal -> last joined; rounds "
         "round-robin over the rows"},
        {"rounds", o.reps},
        {"rows", out}};
    std::ofstream(o.json) << doc.dump(2) << "\n";
    fmt::print("\nwrote {}\n", o.json);
  }
  return 0;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  try {
    return cohort::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "rendezvous_bench: {}\n", e.what());
    return 1;
  }
}
