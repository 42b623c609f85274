// Collectives benchmark in the format of nccl-tests: for each backend and operation, sizes from
// --min-bytes to --max-bytes, out-of-place and in-place, with time, algbw, busbw and the number of
// wrong elements; and, in the same run, the same operation through the raw library as the
// baseline, with the ratio cohort / raw. Run it under mpirun (then both MPI and Gloo run), or
// under `cohort launch` / any env contract for Gloo alone; `--backends ps` under
// `cohort launch --ps-servers N` measures the parameter servers against raw Gloo over TCP.
// `--backends shm` (under mpirun) measures the shared-memory collectives (collectives/shm/),
// called directly as the Gloo backend's worker thread calls them, against raw MPI (Open MPI's own
// shared memory) in the same processes.
//
// For all-reduce every row also shows the physical limit: the ranks' memcpy bandwidth at that
// size, measured in the same run with one copy per rank at once, and the busbw an algorithm that
// moves only 2S(n-1)/n + S bytes per rank through memory would reach at that bandwidth, with our
// fraction of it (out-of-place, in-place).
//
//   mpirun -np 4 -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=29500 build/bin/collectives_bench
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <thread>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/bench_runners.h"
#include "collectives/registry.h"
#include "collectives/shm/shm_collectives.h"
#include "collectives/store/store_from_env.h"
#include "common/env.h"
#include "common/log.h"
#include "common/world.h"

namespace cohort::bench {
namespace {

using namespace collectives;
using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<std::string> backends = {"mpi", "gloo"};
  std::vector<std::string> ops = {"allreduce", "allgather", "reducescatter", "broadcast"};
  size_t min_bytes = 8;
  size_t max_bytes = size_t{256} << 20;
  int step = 2;
  int rounds = 3;
  double budget_ms = 40;  // per measurement
  int max_iters = 500;
  std::string json;
};

OpType ParseOp(const std::string& s) {
  if (s == "allreduce") return OpType::kAllReduce;
  if (s == "allgather") return OpType::kAllGather;
  if (s == "reducescatter") return OpType::kReduceScatter;
  if (s == "broadcast") return OpType::kBroadcast;
  throw InvalidArgument("unknown op '" + s +
                        "'; use allreduce, allgather, reducescatter, broadcast");
}

// nccl-tests' bus bandwidth factor: what each link carries relative to the buffer size.
double BusFactor(OpType op, int n) {
  switch (op) {
    case OpType::kAllReduce:
      return 2.0 * (n - 1) / n;
    case OpType::kAllGather:
    case OpType::kReduceScatter:
      return static_cast<double>(n - 1) / n;
    default:
      return 1.0;
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// cohort's shared-memory collectives, called directly (no communicator, no worker thread).
class ShmRunner : public Runner {
 public:
  ShmRunner(Store& store, int rank, int size) : r_(rank), n_(size) {
    std::string why;
    shm_ = ShmCollectives::Create(store, "bench/shm", rank, size, kTimeout, &why);
    if (!shm_) throw Unavailable("no shared memory: " + why);
  }
  std::string Name() const override { return "cohort shm"; }

  void Run(OpType op, void* in, void* out, size_t count, DType dtype, bool in_place) override {
    const size_t per = count / n_, es = ElementSize(dtype);
    char* i = static_cast<char*>(in);
    char* o = static_cast<char*>(out);
    switch (op) {
      case OpType::kAllReduce:
        return shm_->AllReduce(in_place ? out : in, out, count, dtype, ReduceOp::kSum, kTimeout);
      case OpType::kAllGather:
        return shm_->AllGather(in_place ? o + r_ * per * es : i, o, per, dtype, kTimeout);
      case OpType::kReduceScatter:
        return shm_->ReduceScatter(i, in_place ? i + r_ * per * es : o, per, dtype,
                                   ReduceOp::kSum, kTimeout);
      case OpType::kBroadcast:
        if (!in_place && r_ == 0) std::memcpy(out, in, count * es);
        return shm_->Broadcast(out, count, dtype, 0, kTimeout);
      default:
        throw InvalidArgument("bench: unsupported op");
    }
  }

 private:
  static constexpr std::chrono::seconds kTimeout{60};
  const int r_, n_;
  std::unique_ptr<ShmCollectives> shm_;
};

// The physical limit's measurement: every rank copies the buffer at once (as many copies as
// ranks), so memory bandwidth is shared as it is during the collective.
class CopyRunner : public Runner {
 public:
  std::string Name() const override { return "memcpy"; }
  void Run(OpType, void* in, void* out, size_t count, DType dtype, bool) override {
    std::memcpy(out, in, count * ElementSize(dtype));
  }
};

// The busbw of an all-reduce that moves (bus + 1) * S bytes per rank through memory (bus S for
// the exchange, S for the result) at the rate one rank's memcpy of S bytes in copy_us shows
// (2 S bytes of traffic: read and write).
double LimitBusbw(double bytes, double bus, double copy_us) {
  if (bus <= 0 || copy_us <= 0) return 0;
  const double limit_us = (bus + 1) * copy_us / 2;
  return bus * bytes / limit_us / 1e3;
}

class Bench {
 public:
  Bench(Communicator& comm, Runner& ours, Runner& raw, const Options& o)
      : comm_(comm), ours_(ours), raw_(raw), o_(o), n_(comm.Size()), r_(comm.Rank()) {
    in_.resize(o.max_bytes / 4 + 64);
    out_.resize(o.max_bytes / 4 + 64);
    // Touch every page now: first-touch page faults inside a timed loop measure the kernel.
    std::fill(in_.begin(), in_.end(), 1.0f);
    std::fill(out_.begin(), out_.end(), 0.0f);
  }

  nlohmann::json RunOp(OpType op) {
    nlohmann::json rows = nlohmann::json::array();
    if (r_ == 0) PrintHeader(op);
    for (size_t bytes = o_.min_bytes; bytes <= o_.max_bytes; bytes *= o_.step) {
      size_t count = bytes / 4;
      // allgather and reducescatter split the buffer evenly across ranks.
      if (op == OpType::kAllGather || op == OpType::kReduceScatter) count -= count % n_;
      if (count == 0) continue;
      rows.push_back(RunSize(op, count));
    }
    return rows;
  }

 private:
  // Seconds per op for `iters` back-to-back ops; the slowest rank's time.
  double TimeBatch(Runner& side, OpType op, size_t count, bool in_place, int iters) {
    comm_.Barrier()->Wait();
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i)
      side.Run(op, in_.data(), out_.data(), count, DType::kFloat32, in_place);
    double secs = std::chrono::duration<double>(Clock::now() - t0).count() / iters;
    comm_.AllReduce(TensorView(&secs, 1, DType::kFloat64), ReduceOp::kMax)->Wait();
    return secs;
  }

  // Back-to-back ops per batch, for each side: about --budget-ms of it. Per side, not one count
  // for both: a TCP ring here slows down the longer it runs back to back (at 64 KiB, 1.7 ms an
  // op in 0.2 s batches and 3.5 ms in 0.8 s ones), so the faster side's count would give the
  // slower side longer batches and a worse time than its own.
  struct Iters {
    int ours, raw;
  };
  Iters ChooseIters(OpType op, size_t count) {
    for (int w = 0; w < 2; ++w) {  // warm up both sides: connections, caches, pages
      ours_.Run(op, in_.data(), out_.data(), count, DType::kFloat32, false);
      raw_.Run(op, in_.data(), out_.data(), count, DType::kFloat32, false);
    }
    int64_t iters[2];
    Runner* sides[2] = {&ours_, &raw_};
    for (int k = 0; k < 2; ++k) {
      const double t = TimeBatch(*sides[k], op, count, false, 1);
      iters[k] = std::clamp<int64_t>(static_cast<int64_t>(o_.budget_ms / 1e3 / t), 1, o_.max_iters);
    }
    comm_.Broadcast(TensorView(iters, 2, DType::kInt64), 0)->Wait();
    return {static_cast<int>(iters[0]), static_cast<int>(iters[1])};
  }

  // Fills inputs with (i % 7) + rank, runs cohort's side once, counts wrong elements.
  int64_t CountWrong(OpType op, size_t count, bool in_place) {
    const size_t per = count / n_;
    float* in = in_.data();
    float* out = out_.data();
    for (size_t i = 0; i < count; ++i) in[i] = static_cast<float>(i % 7 + r_);
    if (op == OpType::kAllGather) {
      float* mine = in_place ? out + r_ * per : in;
      for (size_t i = 0; i < per; ++i) mine[i] = static_cast<float>(i % 7 + r_);
    }
    if (op == OpType::kAllReduce && in_place) std::copy(in, in + count, out);
    if (op == OpType::kBroadcast && in_place) std::copy(in, in + count, out);
    ours_.Run(op, in, out, count, DType::kFloat32, in_place);
    int64_t wrong = 0;
    const float tri = static_cast<float>(n_ * (n_ - 1) / 2);
    switch (op) {
      case OpType::kAllReduce:
        for (size_t i = 0; i < count; ++i) wrong += out[i] != n_ * static_cast<float>(i % 7) + tri;
        break;
      case OpType::kAllGather:
        for (size_t j = 0; j < count; ++j)
          wrong += out[j] != static_cast<float>(j % per % 7 + j / per);
        break;
      case OpType::kReduceScatter: {
        const float* res = in_place ? in + r_ * per : out;
        for (size_t i = 0; i < per; ++i) {
          wrong += res[i] != n_ * static_cast<float>((r_ * per + i) % 7) + tri;
        }
        break;
      }
      default:
        for (size_t i = 0; i < count; ++i) wrong += out[i] != static_cast<float>(i % 7);
    }
    comm_.AllReduce(TensorView(&wrong, 1, DType::kInt64), ReduceOp::kSum)->Wait();
    return wrong;
  }

  nlohmann::json RunSize(OpType op, size_t count) {
    const Iters iters = ChooseIters(op, count);
    std::vector<double> t[4];  // ours oop, ours ip, raw oop, raw ip
    std::vector<double> copy;  // the limit's memcpy (all-reduce only)
    const bool limit = op == OpType::kAllReduce;
    for (int round = 0; round < o_.rounds; ++round) {
      if (limit) copy.push_back(TimeBatch(copy_, op, count, false, iters.ours));
      // Alternate which side goes first: these machines drift by up to 2.5x run to run.
      const bool ours_first = round % 2 == 0;
      for (int k = 0; k < 2; ++k) {
        const bool ours = (k == 0) == ours_first;
        for (int ip = 0; ip < 2; ++ip) {
          t[(ours ? 0 : 2) + ip].push_back(
              TimeBatch(ours ? ours_ : raw_, op, count, ip == 1, ours ? iters.ours : iters.raw));
        }
      }
    }
    const double us[4] = {Median(t[0]) * 1e6, Median(t[1]) * 1e6, Median(t[2]) * 1e6,
                          Median(t[3]) * 1e6};
    const int64_t wrong_oop = CountWrong(op, count, false);
    const int64_t wrong_ip = CountWrong(op, count, true);
    const double bytes = static_cast<double>(count) * 4;
    auto algbw = [&](double u) { return bytes / u / 1e3; };  // GB/s
    const double bus = BusFactor(op, n_);
    const double copy_us = limit ? Median(copy) * 1e6 : 0;
    const double limit_bw = LimitBusbw(bytes, bus, copy_us);
    auto fraction = [&](double u) { return limit_bw > 0 ? algbw(u) * bus / limit_bw : 0.0; };
    if (r_ == 0) {
      fmt::print(
          "{:>12} {:>11} {:>5}  {:>9.1f} {:>6.2f} {:>6.2f} {:>6}  {:>9.1f} {:>6.2f} {:>6.2f} {:>6}"
          "  {:>9.1f} {:>6.2f} {:>9.1f} {:>6.2f}  {:>6.3f} {:>6.3f}",
          count * 4, count, "f32", us[0], algbw(us[0]), algbw(us[0]) * bus, wrong_oop, us[1],
          algbw(us[1]), algbw(us[1]) * bus, wrong_ip, us[2], algbw(us[2]) * bus, us[3],
          algbw(us[3]) * bus, us[2] / us[0], us[3] / us[1]);
      if (limit) {
        fmt::print("  {:>7.1f} {:>6.2f} {:>5.2f} {:>5.2f}", n_ * 2 * bytes / copy_us / 1e3,
                   limit_bw, fraction(us[0]), fraction(us[1]));
      }
      fmt::print("\n");
      std::fflush(stdout);
    }
    return {{"bytes", count * 4},
            {"copy_us", copy_us},
            {"limit_busbw", limit_bw},
            {"fraction_oop", fraction(us[0])},
            {"fraction_ip", fraction(us[1])},
            {"count", count},
            {"dtype", "f32"},
            {"iters", iters.ours},
            {"raw_iters", iters.raw},
            {"ours_oop_us", us[0]},
            {"ours_ip_us", us[1]},
            {"raw_oop_us", us[2]},
            {"raw_ip_us", us[3]},
            {"ours_oop_busbw", algbw(us[0]) * bus},
            {"ours_ip_busbw", algbw(us[1]) * bus},
            {"raw_oop_busbw", algbw(us[2]) * bus},
            {"raw_ip_busbw", algbw(us[3]) * bus},
            {"wrong_oop", wrong_oop},
            {"wrong_ip", wrong_ip},
            {"ratio_oop", us[2] / us[0]},
            {"ratio_ip", us[3] / us[1]}};
  }

  void PrintHeader(OpType op) {
    fmt::print(
        "\n# {} | backend {} | {} ranks | {} vs {} | medians of {} rounds, slowest rank, "
        "GB/s\n",
        OpTypeName(op), comm_.Backend(), n_, ours_.Name(), raw_.Name(), o_.rounds);
    const bool limit = op == OpType::kAllReduce;
    fmt::print("#{:>11} {:>11} {:>5}  {:>31}  {:>31}  {:>16}  {:>16}  {:>13}{}\n", "", "", "",
               "cohort out-of-place", "cohort in-place", "raw out-of-place", "raw in-place",
               "raw/cohort", limit ? "  physical limit  (copy: all ranks' memcpy traffic)" : "");
    fmt::print(
        "#{:>11} {:>11} {:>5}  {:>9} {:>6} {:>6} {:>6}  {:>9} {:>6} {:>6} {:>6}  {:>9} "
        "{:>6}  {:>9} {:>6}  {:>6} {:>6}{}\n",
        "size(B)", "count", "type", "time(us)", "algbw", "busbw", "#wrong", "time(us)", "algbw",
        "busbw", "#wrong", "time(us)", "busbw", "time(us)", "busbw", "oop", "ip",
        limit ? fmt::format("  {:>7} {:>6} {:>5} {:>5}", "copy", "busbw", "oop", "ip") : "");
    std::fflush(stdout);
  }

  Communicator& comm_;
  Runner& ours_;
  Runner& raw_;
  CopyRunner copy_;
  const Options& o_;
  const int n_, r_;
  std::vector<float> in_, out_;
};

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "cohort collectives benchmark (nccl-tests format, with the raw library as baseline)"};
  app.add_option("--backends", o.backends, "backends to measure")->delimiter(',');
  app.add_option("--ops", o.ops, "allreduce, allgather, reducescatter, broadcast")->delimiter(',');
  app.add_option("--min-bytes", o.min_bytes, "smallest buffer");
  app.add_option("--max-bytes", o.max_bytes, "largest buffer");
  app.add_option("--step-factor", o.step, "size multiplier between rows")->check(CLI::Range(2, 64));
  app.add_option("--rounds", o.rounds, "alternating rounds per size; medians are reported")
      ->check(CLI::Range(1, 99));
  app.add_option("--budget-ms", o.budget_ms, "target time of one measurement");
  app.add_option("--json", o.json, "write every row to this JSON file");
  CLI11_PARSE(app, argc, argv);

  const World world = DetectWorld();
  log::SetRank(world.rank);
  auto store = ConnectStoreFromEnv();
  nlohmann::json results = {
      {"world", world.size}, {"dtype", "f32"}, {"runs", nlohmann::json::array()}};
  for (const auto& backend : o.backends) {
    CommConfig cfg = CommConfig::FromEnv(world.rank, world.size, store);
    cfg.name = "bench-" + backend;
    const bool shm = backend == "shm";
    std::unique_ptr<Communicator> comm;
    std::unique_ptr<Runner> ours;
    try {
      // shm: the MPI communicator only times (barriers, the slowest rank's time).
      comm = CreateCommunicator(shm ? "mpi" : backend, cfg);
      ours = shm ? std::make_unique<ShmRunner>(*store, world.rank, world.size)
                 : MakeCohortRunner(*comm);
    } catch (const Unavailable& e) {
      if (world.rank == 0) fmt::print("\n# {}: skipped: {}\n", backend, e.what());
      continue;
    }
    // ps has no library underneath; its baseline is what it stands in for: raw Gloo over TCP.
    // shm's baseline is Open MPI's shared memory.
    const std::string raw_backend = backend == "ps" ? "gloo" : shm ? "mpi" : backend;
    auto raw = MakeRawRunner(raw_backend, world.rank, world.size, store);
    if (!raw) continue;
    Bench bench(*comm, *ours, *raw, o);
    for (const auto& name : o.ops) {
      nlohmann::json rows = bench.RunOp(ParseOp(name));
      results["runs"].push_back({{"backend", backend}, {"op", name}, {"rows", rows}});
    }
  }
  // Rank 0 hosts the store (MASTER_ADDR/MASTER_PORT): it must outlive every other rank's use of
  // it, or their last health reports fail. The communicators are gone by now.
  store->Add("bench/done", 1);
  if (world.rank == 0) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::stoll(store->Get("bench/done", std::chrono::milliseconds(0))) < world.size &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (world.rank == 0 && !o.json.empty()) {
    std::ofstream(o.json) << results.dump(1) << "\n";
    fmt::print("\n# wrote {}\n", o.json);
  }
  return 0;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  try {
    return cohort::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "collectives_bench: {}\n", e.what());
    return 1;
  }
}
