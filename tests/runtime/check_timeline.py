"""Checks a COHORT_TIMELINE trace: python3 check_timeline.py TRACE RANKS STEPS.

Asserts that it is a Chrome trace (json with traceEvents) holding, for every rank (pid), STEPS
"step" spans on its main track, each forward/backward/optimizer inside a step of the same track,
each "ddp wait" inside a backward, one DDP all-reduce per step on the "ddp buckets" track, the
checkpoint phases, and clocks aligned across ranks: the k-th all-reduce of every rank overlaps
the others' (DDP's all-reduce is where ranks meet). Prints a summary line; exits 1 on failure.
"""
import json
import sys


def inside(a, b):
    return b["ts"] <= a["ts"] and a["ts"] + a["dur"] <= b["ts"] + b["dur"]


def main():
    path, ranks, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    events = json.load(open(path))["traceEvents"]
    tracks = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
              if e["ph"] == "M" and e["name"] == "thread_name"}
    spans = [e for e in events if e["ph"] == "X"]
    assert sorted({e["pid"] for e in spans}) == list(range(ranks)), "pids are the ranks"
    allreduces = []
    for rank in range(ranks):
        mine = [e for e in spans if e["pid"] == rank]
        on = lambda track: [e for e in mine if tracks[(rank, e["tid"])] == track]
        main_track = on("main")
        step = [e for e in main_track if e["name"] == "step"]
        assert len(step) == steps, f"rank {rank}: {len(step)} steps, want {steps}"
        for name in ("forward", "backward", "optimizer"):
            parts = [e for e in main_track if e["name"] == name]
            assert len(parts) == steps, f"rank {rank}: {len(parts)} {name}"
            assert all(any(inside(p, s) for s in step) for p in parts), f"{name} outside a step"
        backward = [e for e in main_track if e["name"] == "backward"]
        waits = [e for e in main_track if e["name"] == "ddp wait"]
        assert len(waits) == steps and all(any(inside(w, b) for b in backward) for w in waits), \
            f"rank {rank}: ddp wait outside backward"
        buckets = sorted(on("ddp buckets"), key=lambda e: e["ts"])
        assert len(buckets) == steps and all(e["args"]["bytes"] > 0 for e in buckets), \
            f"rank {rank}: {len(buckets)} all-reduces"
        allreduces.append(buckets)
        assert [e for e in main_track if e["name"] == "checkpoint capture"], "no capture"
        assert [e for e in on("checkpoint writer") if e["name"] == "checkpoint write"], "no write"
    worst = 0
    for k in range(steps):
        starts = [a[k]["ts"] for a in allreduces]
        ends = [a[k]["ts"] + a[k]["dur"] for a in allreduces]
        assert max(starts) <= min(ends), f"all-reduce {k} of the ranks do not overlap"
        worst = max(worst, max(starts) - min(starts))
    print(f"timeline ok: {ranks} ranks x {steps} steps, {len(spans)} spans; "
          f"all-reduce start spread up to {worst} us")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"timeline check failed: {e}")
        sys.exit(1)
