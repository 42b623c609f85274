#!/usr/bin/python3
"""DDP training benchmark (issue 4): cohort's DistributedDataParallel against PyTorch DDP.

For each model (cnn: the Fashion-MNIST CNN; mlp: 784-2048-2048-2048-10, ~10M parameters) and
world size (1, 2, 4), both sides train the same model from the same seed on the same synthetic
batches (generated once per rank) with SGD, B samples per worker per step, W warm-up + N timed
steps; rounds alternate the order of the sides (cohort first in even rounds, PyTorch first in
odd ones). The timed region is the training steps only, measured inside the workers (slowest
rank); process start, rendezvous and data generation are outside it.
  cohort      `cohort launch --nproc-per-node W --backend gloo -- ddp_bench_worker ...` (--launch
              direct: plain processes with MASTER_ADDR/MASTER_PORT, rank 0 hosts the store)
  cohort-mpi  `mpirun -np W ddp_bench_worker ...` with COHORT_BACKEND=mpi: cohort's Open MPI
              backend (shared memory); Debian's torch has no MPI backend, so PyTorch stays on gloo
  pytorch     /usr/bin/python3 bench/ddp/torch_ddp_worker.py, W plain processes with env://
              (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE), torch DDP over gloo; no torchrun
  pytorch-heap  the pytorch side with glibc told by env (MALLOC_MMAP_MAX_=0,
              MALLOC_TRIM_THRESHOLD_=1 GiB) to keep freed memory, as cohort's ProcessGroup does by
              itself (COHORT_MALLOC_TUNE): the comparison with the allocator's effect taken out
  -plain      (world 1 only) the same loop without DDP on each side: the local compute floor
All workers of both sides run in this script's session (see spawn_ranks on why that matters).
Both sides get OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1 and torch.set_num_threads(1).
Both sides start from bitwise the same parameters and batches (checked: init_sum, data_sum), so
their losses agree. Printed: median samples/s (min-max), the ratio cohort/pytorch of the medians
(and the median of each round's own ratio), each side's scaling efficiency (samples/s at W /
(W x samples/s at 1), DDP at world 1), cohort's overlap (share of all-reduce time hidden behind
backward, from DistributedDataParallel::Stats(); PyTorch's from its DDP logger), per-step phase
times (forward+loss, backward incl. the wait for buckets, optimizer) and CPU time per step. A run
whose ranks end with different parameters fails (exit code 2 from the worker) and makes this
script exit 1.
Run with Debian's /usr/bin/python3 (the one with torch):
  /usr/bin/python3 bench/ddp/ddp_bench.py [--rounds 3] [--build-dir build] [--json out/x.json]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TORCH_WORKER = os.path.join(HERE, "torch_ddp_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env():
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", COHORT_LOG_LEVEL="warn",
               GRPC_VERBOSITY="NONE", COHORT_BACKEND="gloo")
    return env


def finish(p, deadline):
    """Waits for p (started in its own process group) until deadline; kills the group after."""
    try:
        out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        return p.returncode, out, False
    except subprocess.TimeoutExpired:
        # SIGTERM first: `cohort launch` forwards it to its workers, which have process groups of
        # their own and would outlive a SIGKILL of the launcher's.
        os.killpg(p.pid, signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        return None, out, True


# Every worker of both sides stays in this script's session. The kernel's autogroup scheduling
# (sched_autogroup_enabled, on here) shares the CPU fairly between sessions, not processes: ranks
# started in sessions of their own would each get a whole session's share on a busy machine, one
# side's W ranks W shares against the other's one (`cohort launch` keeps its workers in its
# session, as torchrun does). That skewed the first measurements 2:1 at world 2.
def spawn_ranks(cmd, world, extra_env, deadline):
    """World plain processes with the env:// contract (rank 0 hosts the store on MASTER_PORT)."""
    env = base_env()
    env.update(extra_env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    procs = [subprocess.Popen(cmd, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              process_group=0) for r in range(world)]
    rcs, text, timed_out = [], b"", False
    for r, p in enumerate(procs):
        rc, out, to = finish(p, deadline)
        rcs.append(rc)
        text += b"".join(b"[rank %d] " % r + line + b"\n" for line in out.splitlines())
        timed_out |= to
    return rcs, text, timed_out


def worker_args(args, model, world, out):
    return ["--model", model, "--batch", str(args.batch), "--warmup", str(args.warmup),
            "--steps", str(args.steps), "--seed", str(args.seed), "--out", out]


def cohort_extra(args, side):
    """--cohort-args (e.g. DDP bucket sizes) for the cohort sides that use DDP."""
    return args.cohort_args.split() if side in COHORT_SIDES else []


def run_one(args, side, model, world, tag):
    """One run of one side; returns the worker's JSON plus ok/error."""
    fd, out = tempfile.mkstemp(prefix=f"ddp-bench-{side}-", suffix=".json")
    os.close(fd)
    os.unlink(out)  # the worker's rank 0 creates it: no file means no result
    wargs = worker_args(args, model, world, out) + cohort_extra(args, side)
    plain = side.endswith("-plain")
    if plain:
        wargs.append("--plain")
    if side.startswith("cohort-ps-async"):
        wargs.append("--ps-async")
    if side == "cohort-ps-async-pipe":
        wargs.append("--ps-pipeline")
    deadline = time.monotonic() + args.timeout
    if side.startswith("cohort") and args.launch == "launch":
        cmd = [args.cohort, "launch", "--nproc-per-node", str(world),
               *LAUNCH_FLAGS.get(side, ["--backend", "gloo"]),
               "--run-id", f"ddp-bench-{tag}", "--", args.worker] + wargs
        env = dict(base_env(), **SIDE_ENV.get(side, {}))
        if side.startswith("cohort-ps"):
            env["COHORT_BACKEND"] = "ps"
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, process_group=0)
        rc, text, timed_out = finish(p, deadline)
        rcs = [rc]
    elif side == "cohort-mpi":
        # Open MPI's own launcher; the workers find the world and a store from its env.
        env = dict(base_env(), COHORT_BACKEND="mpi", COHORT_RUN_ID=f"ddp-bench-{tag}",
                   OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1")
        cmd = ["mpirun", "-np", str(world), "--bind-to", "none", args.worker] + wargs
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             process_group=0)
        rc, text, timed_out = finish(p, deadline)
        rcs = [rc]
    elif side.startswith("cohort"):
        rcs, text, timed_out = spawn_ranks([args.worker] + wargs, world,
                                           {"COHORT_RUN_ID": f"ddp-bench-{tag}"}, deadline)
    else:
        rcs, text, timed_out = spawn_ranks(["/usr/bin/python3", TORCH_WORKER] + wargs, world,
                                           HEAP_ENV if side.startswith("pytorch-heap") else {},
                                           deadline)
    # Other work on the machine skews a run: keep the 1-minute load average after it.
    r = {"side": side, "model": model, "world": world, "rcs": rcs,
         "loadavg_1m": os.getloadavg()[0]}
    if os.path.exists(out):
        with open(out) as f:
            r.update(json.load(f))
        r["side"] = side  # the worker's own "side" does not know its launcher
        os.unlink(out)
    r["ok"] = (not timed_out and all(rc == 0 for rc in rcs) and "samples_per_s" in r
               and r.get("params_identical", False))
    if not r["ok"]:
        why = ("timed out" if timed_out else
               "parameters differ across ranks" if r.get("params_identical") is False else
               f"exit codes {rcs}")
        r["error"] = why + ": " + text[-1500:].decode(errors="replace")
    return r


def med(values):
    return statistics.median(values) if values else None


def cell(values, fmt="{:.0f}"):
    if not values:
        return "-"
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def num(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def summarize(runs, args):
    summary = {}
    for model in args.models:
        for world in args.worlds:
            for side in args.sides:
                ok = [r for r in runs if (r["side"], r["model"], r["world"]) == (side, model, world)
                      and r["ok"]]
                if not ok:
                    continue
                s = {"ok": len(ok), "samples_per_s": [r["samples_per_s"] for r in ok],
                     "step_ms": med([r["step_ms"] for r in ok]),
                     "phases_ms": {k: med([r["phases_ms"][k] for r in ok])
                                   for k in ("forward", "backward", "optimizer")},
                     "loss": med([r["loss"] for r in ok]), "init_sum": ok[0].get("init_sum"),
                     "data_sum": ok[0].get("data_sum")}
                s["cpu_ms_per_step"] = med([r["cpu_ms_per_step"] for r in ok])
                logged = [r["ddp_logger"] for r in ok if "ddp_logger" in r]
                if logged:
                    s["ddp_logger"] = {k: med([lg[k] for lg in logged])
                                       for k in ("comm_ms", "overlap_ms", "overlap_fraction")}
                stats = [r["ddp_stats"] for r in ok if "ddp_stats" in r]
                if stats:
                    s["ddp"] = {k: med([st[k] for st in stats]) for k in
                                ("comm_ms_per_step", "exposed_ms_per_step", "overlap_fraction")}
                    s["ddp"]["buckets"] = stats[-1]["buckets"]
                s["median"] = med(s["samples_per_s"])
                summary[f"{side}/{model}/{world}"] = s
    return summary


COHORT_SIDES = ("cohort", "cohort-mpi")  # cohort over Gloo (as PyTorch), and over Open MPI
# The parameter servers (sync ps, 2 servers) against what they stand in for: cohort's gloo over
# TCP only (no shared memory), both under `cohort launch`.
# cohort-ps-async: no DDP, the servers run SGD (ASP: each step pushes the gradients and pulls the
# parameters), against sync ps; -pipe overlaps each push with the next step.
LAUNCH_FLAGS = {"cohort-ps": ["--backend", "ps", "--ps-servers", "2"],
                "cohort-ps-async": ["--backend", "ps", "--ps-servers", "2"],
                "cohort-ps-async-pipe": ["--backend", "ps", "--ps-servers", "2"]}
SIDE_ENV = {"cohort-tcp": {"COHORT_SHM": "0"}}
# (side, baseline, what the table says), each printed when both ran.
PAIRS = (("cohort-ps", "cohort-tcp",
          "DDP on the parameter servers (sync ps, 2 servers) vs cohort gloo over TCP "
          "(COHORT_SHM=0)"),
         ("cohort-ps-async", "cohort-ps",
          "asynchronous training on the parameter servers (ASP, 2 servers) vs sync ps"),
         ("cohort-ps-async-pipe", "cohort-ps",
          "asynchronous training pipelined (each push overlaps the next step) vs sync ps"),
         ("cohort-ps-async-pipe", "cohort-ps-async",
          "asynchronous training pipelined vs not"))
# What cohort's ProcessGroup::FromEnv does with mallopt (common/heap.cc), as glibc's env tunables.
HEAP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def derived(summary, runs, args):
    """Per cohort side: ratios to PyTorch (of the medians, and the median of the per-round paired
    ratios) and every side's scaling efficiency."""
    rows = {}
    for model in args.models:
        for world in args.worlds:
            p = summary.get(f"pytorch/{model}/{world}")
            for side in COHORT_SIDES:
                c = summary.get(f"{side}/{model}/{world}")
                if not c:
                    continue
                row = {"model": model, "world": world, "side": side}
                if p:
                    row["ratio"] = c["median"] / p["median"]
                    paired = []
                    for rnd in range(args.rounds):
                        pick = {r["side"]: r["samples_per_s"] for r in runs if r["ok"] and
                                r["round"] == rnd and (r["model"], r["world"]) == (model, world)}
                        if side in pick and "pytorch" in pick:
                            paired.append(pick[side] / pick["pytorch"])
                    row["ratio_paired_median"] = med(paired)
                ph = summary.get(f"pytorch-heap/{model}/{world}")
                if ph:
                    row["ratio_heap"] = c["median"] / ph["median"]
                for who, key in ((side, "scaling_cohort"), ("pytorch", "scaling_pytorch")):
                    one = summary.get(f"{who}/{model}/1")
                    here = summary.get(f"{who}/{model}/{world}")
                    if one and here:
                        row[key] = here["median"] / (world * one["median"])
                rows[f"{side}/{model}/{world}"] = row
    return rows


def print_pairs(summary, runs, args):
    """samples/s of each side of PAIRS against its baseline, when both ran."""
    for side, base, what in PAIRS:
        if side not in args.sides or base not in args.sides:
            continue
        print(f"\n{what}: samples/s medians (min-max); ratio: of the medians; paired: median over "
              "rounds of the same round's ratio")
        print(f"{'model':>5} {'world':>5} {side + ' samples/s':>26} {base + ' samples/s':>26} "
              f"{'ratio':>7} {'paired':>6}")
        for model in args.models:
            for world in args.worlds:
                a = summary.get(f"{side}/{model}/{world}")
                b = summary.get(f"{base}/{model}/{world}")
                if not a or not b:
                    continue
                paired = []
                for rnd in range(args.rounds):
                    pick = {r["side"]: r["samples_per_s"] for r in runs if r["ok"] and
                            r["round"] == rnd and (r["model"], r["world"]) == (model, world)}
                    if side in pick and base in pick:
                        paired.append(pick[side] / pick[base])
                print(f"{model:>5} {world:>5} {cell(a['samples_per_s']):>26} "
                      f"{cell(b['samples_per_s']):>26} {num(a['median'] / b['median']):>7} "
                      f"{num(med(paired)):>6}")


def print_tables(summary, rows, args):
    print(f"\nDDP training, cohort vs PyTorch DDP {args.torch_version} (gloo): batch {args.batch} "
          f"per worker, {args.steps} timed steps after {args.warmup} warm-up, {args.rounds} rounds "
          f"alternating the sides; samples/s medians (min-max); {os.cpu_count()} cores")
    print(f"{'model':>5} {'world':>5} {'cohort':>6} {'cohort samples/s':>20} "
          f"{'pytorch samples/s':>20} {'cohort/pt':>9} {'paired':>6} {'/pt-heap':>8} "
          f"{'eff cohort':>10} {'eff pt':>6} {'overlap':>7} {'comm ms':>7} {'exposed':>7}")
    for model in args.models:
        for world in args.worlds:
            p = summary.get(f"pytorch/{model}/{world}")
            for side in COHORT_SIDES:
                row = rows.get(f"{side}/{model}/{world}")
                if not row:
                    continue
                c = summary[f"{side}/{model}/{world}"]
                ddp = c.get("ddp", {})
                print(f"{model:>5} {world:>5} {'gloo' if side == 'cohort' else 'mpi':>6} "
                      f"{cell(c['samples_per_s']):>20} {cell(p and p['samples_per_s']):>20} "
                      f"{num(row.get('ratio')):>9} {num(row.get('ratio_paired_median')):>6} "
                      f"{num(row.get('ratio_heap')):>8} "
                      f"{num(row.get('scaling_cohort')):>10} {num(row.get('scaling_pytorch')):>6} "
                      f"{num(ddp.get('overlap_fraction')):>7} "
                      f"{num(ddp.get('comm_ms_per_step'), '{:.1f}'):>7} "
                      f"{num(ddp.get('exposed_ms_per_step'), '{:.1f}'):>7}")
    print("  cohort: its backend (PyTorch always uses gloo); cohort/pt: ratio of the medians; "
          "paired: median over rounds of the same round's ratio; /pt-heap: cohort over the "
          "pytorch-heap side (PyTorch with glibc keeping freed memory, as cohort does); eff: samples/s at W / (W x "
          "samples/s at world 1), each side its own; overlap: 1 - exposed/comm over the timed "
          "steps, from DistributedDataParallel::Stats(): comm = each bucket's all-reduce from the "
          "start of its execution to done (Work::Duration), summed over buckets; exposed = "
          "backward's wait for them at its end (ms per step, mean over ranks)")

    print("\nper-step phases, ms (medians over rounds of the mean over ranks); cpu/rank: CPU time "
          "of each worker process (all its threads) per step")
    print(f"{'model':>5} {'world':>5} {'side':>13} {'step':>8} {'forward':>8} {'backward':>9} "
          f"{'optimizer':>9} {'cpu/rank':>9} {'loss':>8}  overlap (own measure)")
    for model in args.models:
        for world in args.worlds:
            for side in args.sides:
                s = summary.get(f"{side}/{model}/{world}")
                if not s:
                    continue
                ph = s["phases_ms"]
                own = ""
                if "ddp" in s:
                    d = s["ddp"]
                    own = (f"{d['overlap_fraction']:.2f}: {d['exposed_ms_per_step']:.1f} of "
                           f"{d['comm_ms_per_step']:.1f} ms exposed, {d['buckets']} buckets")
                elif "ddp_logger" in s:
                    d = s["ddp_logger"]
                    own = (f"{d['overlap_fraction']:.2f}: {d['overlap_ms']:.1f} of "
                           f"{d['comm_ms']:.1f} ms hidden (torch's DDP logger)")
                print(f"{model:>5} {world:>5} {side:>13} {s['step_ms']:8.1f} {ph['forward']:8.1f} "
                      f"{ph['backward']:9.1f} {ph['optimizer']:9.1f} {s['cpu_ms_per_step']:9.1f} "
                      f"{s['loss']:8.4f}  {own}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--worlds", default="1,2,4")
    ap.add_argument("--batch", type=int, default=64, help="samples per worker per step")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--sides", default="cohort,pytorch,cohort-mpi,cohort-plain,pytorch-plain",
                    help="which to run: cohort (Gloo, under --launch), pytorch, pytorch-heap "
                         "(PyTorch with glibc keeping freed memory), cohort-mpi "
                         "(cohort's MPI backend under mpirun), cohort-ps (sync, 2 servers), "
                         "cohort-ps-async (ASP, 2 servers), cohort-ps-async-pipe (the same, each "
                         "push overlapping the next step), cohort-tcp (gloo, COHORT_SHM=0), "
                         "and at world 1 only the -plain ones (no DDP)")
    ap.add_argument("--launch", choices=["launch", "direct"], default="launch",
                    help="cohort workers under `cohort launch`, or plain processes as PyTorch's")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--timeout", type=float, default=300, help="seconds per run")
    ap.add_argument("--cohort-args", default="",
                    help="extra ddp_bench_worker options for the cohort DDP sides, e.g. "
                         "'--first-bucket-bytes 16870000' (bucket caps, bytes)")
    ap.add_argument("--json", help="write the runs and the summary here")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # in order with the progress lines on stderr
    args.models = args.models.split(",")
    args.worlds = [int(w) for w in args.worlds.split(",")]
    args.cohort = os.path.join(args.build_dir, "bin", "cohort")
    args.worker = os.path.join(args.build_dir, "bin", "ddp_bench_worker")
    args.sides = [s for s in args.sides.split(",") if s]
    known = ["cohort", "pytorch", "pytorch-heap", "cohort-mpi", "cohort-plain", "pytorch-plain",
             "cohort-ps", "cohort-ps-async", "cohort-ps-async-pipe", "cohort-tcp"]
    unknown = set(args.sides) - set(known)
    if unknown:
        sys.exit(f"ddp_bench.py: unknown --sides {sorted(unknown)}; use {', '.join(known)}")
    if "cohort-mpi" in args.sides and not shutil.which("mpirun"):
        args.sides.remove("cohort-mpi")
        print("note: no mpirun here: the cohort-mpi side was skipped", file=sys.stderr)
    args.torch_version = subprocess.run(
        ["/usr/bin/python3", "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True).stdout.strip()
    need = [args.worker] if any(s.startswith("cohort") for s in args.sides) else []
    if any(s.startswith("cohort") for s in args.sides) and args.launch == "launch":
        need.append(args.cohort)
    for exe in need:
        if not os.access(exe, os.X_OK):
            sys.exit(f"ddp_bench.py: {exe} is missing: build it (ninja ddp_bench_worker cohort) "
                     f"or pass --build-dir")

    runs = []
    for rnd in range(args.rounds):
        for model in args.models:
            for world in args.worlds:
                pair = [s for s in args.sides if world == 1 or not s.endswith("-plain")]
                order = pair if rnd % 2 == 0 else pair[::-1]
                for side in order:
                    r = run_one(args, side, model, world, f"{os.getpid()}-{rnd}-{model}-{world}")
                    r["round"] = rnd
                    runs.append(r)
                    extra = ""
                    if r["ok"] and "ddp_stats" in r:
                        extra = f", overlap {r['ddp_stats']['overlap_fraction']:.2f}"
                    print(f"round {rnd + 1}/{args.rounds} {model} world {world} {side:>13}: "
                          + (f"{r['samples_per_s']:8.1f} samples/s, {r['step_ms']:7.1f} ms/step"
                             f"{extra}" if r["ok"] else "FAILED")
                          + f" (load {r['loadavg_1m']:.1f})", file=sys.stderr, flush=True)
                    if not r["ok"]:
                        print("  " + r["error"], file=sys.stderr)

    summary = summarize(runs, args)
    rows = derived(summary, runs, args)
    print_tables(summary, rows, args)
    print_pairs(summary, runs, args)

    target = {}
    for key, row in rows.items():
        if row["world"] in (2, 4) and row.get("ratio") is not None:
            target[key] = row["ratio"] >= 1.2
    notes = []
    for model in args.models:
        c, p = summary.get(f"cohort/{model}/1"), summary.get(f"pytorch/{model}/1")
        if c and p and (c["init_sum"], c["data_sum"]) != (p["init_sum"], p["data_sum"]):
            notes.append(f"{model}: the sides do not start from the same parameters and data "
                         f"(sums {c['init_sum']!r}/{c['data_sum']!r} vs "
                         f"{p['init_sum']!r}/{p['data_sum']!r}): a bug in one of the workers")
        cp, pp = summary.get(f"cohort-plain/{model}/1"), summary.get(f"pytorch-plain/{model}/1")
        if cp and pp and cp["loss"] != pp["loss"]:
            notes.append(f"{model}: without DDP the sides end with different losses "
                         f"({cp['loss']!r} vs {pp['loss']!r}): they do not train the same way")
    if os.cpu_count() < max(args.worlds):
        notes.append(f"{os.cpu_count()} cores: world {max(args.worlds)} oversubscribes them "
                     f"(reported as measured)")
    print("\ntarget cohort >= 1.2x PyTorch DDP: " + (", ".join(
        f"{k} {rows[k]['ratio']:.2f}x {'met' if v else 'NOT met'}" for k, v in target.items())
        or "no pairs measured"))
    for n in notes:
        print("note: " + n)
    failed = [r for r in runs if not r["ok"]]
    if failed:
        print(f"{len(failed)} of {len(runs)} runs FAILED (see above)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"benchmark": "ddp", "how": __doc__, "torch": args.torch_version,
                       "cores": os.cpu_count(), "batch": args.batch, "warmup": args.warmup,
                       "steps": args.steps, "rounds": args.rounds, "launch": args.launch,
                       "cohort_args": args.cohort_args,
                       "summary": summary, "rows": rows, "target": 1.2, "target_met": target,
                       "notes": notes, "runs": runs}, f, indent=2)
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
