#!/usr/bin/python3
"""Launcher startup benchmark (issue 3): from starting a launcher to all 8 workers connected.

Sides, alternated round by round (the order reverses every round), each run fresh:
  cohort    `cohort launch --nproc-per-node N --run-id <fresh> -- launch_bench_worker`
  manual    no launcher: this script starts `cohort store` and N launch_bench_worker processes with
            the env contract itself (a floor for the launcher's own overhead)
  torchrun  Debian's torchrun (`python3 -m torch.distributed.run --nproc_per_node N --redirects 9:0
            --tee 9:0`, the workaround for its crash on Python 3.11) with bench/torch_trivial_worker.py
Every worker joins a Gloo group, passes one barrier, prints `connected <rank> <CLOCK_REALTIME ns>`.
Measured per run: connect = last worker's `connected` time - the CLOCK_REALTIME read just before
the launcher (manual: the store) is spawned; exit = when every process has exited, same origin.
Run with Debian's /usr/bin/python3 (the one with torch):
  /usr/bin/python3 bench/launch_bench.py [--rounds 5] [--build-dir build] [--json out/launch.json]
"""
import argparse
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time

# Anywhere, not per line: workers sharing one stdout may interleave their lines.
CONNECTED = re.compile(rb"connected (\d+) (\d+)")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env():
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


def finish(p, timeout):
    """Waits for p (started in its own session); kills its whole group on timeout."""
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err, False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err, True


def result(name, t0, t_end, nproc, rcs, text, timed_out):
    found = {int(m.group(1)): int(m.group(2)) for m in CONNECTED.finditer(text)}
    ok = not timed_out and all(rc == 0 for rc in rcs) and sorted(found) == list(range(nproc))
    r = {"launcher": name, "ok": ok, "exit_ms": (t_end - t0) / 1e6, "rcs": rcs}
    if found:
        r["connect_ms"] = (max(found.values()) - t0) / 1e6
        r["first_connect_ms"] = (min(found.values()) - t0) / 1e6
    if not ok:
        why = "timed out" if timed_out else f"exit codes {rcs}, ranks seen {sorted(found)}"
        r["error"] = why + ": " + text[-800:].decode(errors="replace")
    return r


def run_launcher(name, cmd, nproc, timeout):
    env = base_env()
    t0 = time.time_ns()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    rc, out, err, timed_out = finish(p, timeout)
    t_end = time.time_ns()
    return result(name, t0, t_end, nproc, [rc], out + b"\n" + err, timed_out)


def run_manual(args, run_id):
    n, port, token = args.nproc, free_port(), secrets.token_hex(16)
    common = base_env()
    common.update(COHORT_STORE=f"127.0.0.1:{port}", COHORT_TOKEN=token, COHORT_RUN_ID=run_id,
                  COHORT_RESTART="0", COHORT_WORLD_SIZE=str(n), COHORT_LOCAL_WORLD_SIZE=str(n),
                  COHORT_NODE_RANK="0", COHORT_NNODES="1", WORLD_SIZE=str(n),
                  LOCAL_WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    t0 = time.time_ns()
    store = subprocess.Popen([args.cohort, "store", "--host", "127.0.0.1", "--port", str(port),
                              "--token", token], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=common, start_new_session=True)
    workers = []
    for r in range(n):
        env = dict(common, COHORT_RANK=str(r), COHORT_LOCAL_RANK=str(r), RANK=str(r),
                   LOCAL_RANK=str(r))
        workers.append(subprocess.Popen([args.worker], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env,
                                        start_new_session=True))
    rcs, text, timed_out = [], b"", False
    for w in workers:
        rc, out, err, to = finish(w, args.timeout)
        rcs.append(rc)
        text += out + b"\n" + err
        timed_out |= to
    t_end = time.time_ns()
    store.send_signal(signal.SIGTERM)
    finish(store, 10)
    return result("manual", t0, t_end, n, rcs, text, timed_out)


def run_one(name, args, tag):
    if name == "cohort":
        return run_launcher(name, [args.cohort, "launch", "--nproc-per-node", str(args.nproc),
                                   "--run-id", f"launch-bench-{tag}", "--", args.worker],
                            args.nproc, args.timeout)
    if name == "manual":
        return run_manual(args, f"launch-bench-{tag}")
    # torch 1.13 spells the flags with underscores (--nproc_per_node, --master_port).
    return run_launcher(name, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                               str(args.nproc), "--master_port", str(free_port()),
                               "--redirects", "9:0", "--tee", "9:0",
                               os.path.join(HERE, "torch_trivial_worker.py")],
                        args.nproc, args.timeout)


def stats(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (page cache)")
    ap.add_argument("--nproc", type=int, default=8)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sides", default="cohort,manual,torchrun")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per run")
    ap.add_argument("--json", help="write the runs and the summary here")
    args = ap.parse_args()
    args.cohort = os.path.join(args.build_dir, "bin", "cohort")
    args.worker = os.path.join(args.build_dir, "bin", "launch_bench_worker")
    sides = args.sides.split(",")
    notes = []
    if "cohort" in sides and subprocess.run([args.cohort, "launch", "--help"],
                                            capture_output=True).returncode != 0:
        sides.remove("cohort")
        notes.append(f"{args.cohort} has no `launch` command yet: the cohort side was skipped")
        print("note: " + notes[-1], file=sys.stderr)

    runs = []
    for rnd in range(-args.warmup, args.rounds):
        order = sides if rnd % 2 == 0 else sides[::-1]
        for name in order:
            r = run_one(name, args, f"{os.getpid()}-{rnd}-{name}")
            r["round"] = rnd
            label = "warm-up" if rnd < 0 else f"round {rnd + 1}/{args.rounds}"
            print(f"{label:>12} {name:>9}: connect {r.get('connect_ms', float('nan')):7.0f} ms, "
                  f"exit {r['exit_ms']:7.0f} ms{'' if r['ok'] else '  FAILED'}",
                  file=sys.stderr)
            if not r["ok"]:
                print("  " + r["error"], file=sys.stderr)
            if rnd >= 0:
                runs.append(r)

    summary = {}
    for name in sides:
        ok = [r for r in runs if r["launcher"] == name and r["ok"]]
        summary[name] = {"ok": len(ok), "runs": sum(r["launcher"] == name for r in runs),
                         "connect_ms": stats([r["connect_ms"] for r in ok]),
                         "first_connect_ms": stats([r["first_connect_ms"] for r in ok]),
                         "exit_ms": stats([r["exit_ms"] for r in ok])}
    ratios = {}
    base = summary.get("torchrun", {}).get("connect_ms")
    for name in sides:
        s = summary[name]
        if name != "torchrun" and base and s["connect_ms"]:
            ratios[name] = {
                "connect": s["connect_ms"]["median"] / base["median"],
                "exit": s["exit_ms"]["median"] / summary["torchrun"]["exit_ms"]["median"]}

    print(f"\nlauncher startup, {args.nproc} local workers (Gloo + one barrier each); "
          f"{args.rounds} rounds alternating sides after {args.warmup} warm-up; medians "
          f"(min-max) in ms from spawning the launcher to the LAST worker's `connected` and to "
          f"all exited")
    print(f"{'launcher':>9} {'ok':>5} {'connect ms':>22} {'exit ms':>22} "
          f"{'x torchrun (connect, exit)':>27}")
    for name in sides:
        s = summary[name]
        cell = lambda st: ("-" if not st else
                           f"{st['median']:.0f} ({st['min']:.0f}-{st['max']:.0f})")
        ratio = ratios.get(name)
        rtext = f"{ratio['connect']:.2f}, {ratio['exit']:.2f}" if ratio else "-"
        print(f"{name:>9} {s['ok']:>2}/{s['runs']:<2} {cell(s['connect_ms']):>22} "
              f"{cell(s['exit_ms']):>22} {rtext:>27}")
    target = None
    if "cohort" in ratios:
        target = ratios["cohort"]["connect"] <= 0.25
        print(f"\ntarget cohort <= 0.25x torchrun (connect): "
              f"{ratios['cohort']['connect']:.2f}x, {'met' if target else 'NOT met'}")
    for n in notes:
        print("note: " + n)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"benchmark": "launch", "nproc": args.nproc, "rounds": args.rounds,
                       "warmup": args.warmup, "how": __doc__, "summary": summary,
                       "ratio_vs_torchrun": ratios, "target": 0.25, "target_met": target,
                       "notes": notes, "runs": runs}, f, indent=2)
        print(f"wrote {args.json}")
    return 0 if all(summary[s]["ok"] == summary[s]["runs"] for s in sides) else 1


if __name__ == "__main__":
    sys.exit(main())
