#!/usr/bin/env python3
"""The table at the end of scripts/device-check: its steps (STEPS.tsv: name, status, seconds,
note) and the measurements in JSON_DIR (nccl.json, staging.json, ddp-step.json, cohort-ddp-R.json,
torch-ddp-R.json, cohort-plain-R.json, torch-plain-R.json), printed and written to RESULTS.json.
  device_summary.py STEPS.tsv JSON_DIR RESULTS.json TOTAL_SECONDS
"""
import glob
import json
import os
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def median_of(json_dir, pattern):
    vals = [d["median_step_ms"] for d in map(load, sorted(glob.glob(os.path.join(json_dir, pattern))))
            if d and "median_step_ms" in d]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def main() -> int:
    steps_path, json_dir, out_path, total = sys.argv[1:5]
    steps = []
    with open(steps_path) as f:
        for line in f:
            name, status, secs, note = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            steps.append({"step": name, "status": status, "seconds": int(secs or 0), "note": note})
    res = {"steps": steps, "total_seconds": int(total)}
    rows = []  # (measurement, value)

    nccl = load(os.path.join(json_dir, "nccl.json"))
    if nccl and nccl.get("rows"):
        res["nccl"] = nccl
        big, small = nccl["rows"][-1], nccl["rows"][0]
        rows.append((f"NCCL all-reduce, 1 rank, {big['bytes'] >> 20} MiB f32",
                     f"busbw {big['busbw_gbs']:.2f} GB/s (0 by definition at 1 rank), "
                     f"algbw {big['algbw_gbs']:.1f} GB/s, {big['time_us']:.0f} us"))
        rows.append((f"NCCL all-reduce, 1 rank, {small['bytes']} B", f"{small['time_us']:.1f} us"))
    else:
        rows.append(("NCCL all-reduce, 1 rank", "not measured"))

    ddp = load(os.path.join(json_dir, "ddp-step.json"))
    if ddp:
        res["ddp_step"] = ddp
        rows.append((f"CUDA-tensor DDP step, world 1 ({ddp['backend']}, {ddp['device']})",
                     f"{'OK' if ddp['ok'] else 'FAILED'}: {ddp['median_step_ms']:.3f} ms/step, "
                     f"loss {ddp['first_loss']:.3f} -> {ddp['last_loss']:.3f}"
                     + ("" if "same_as_plain" not in ddp else
                        f", as the model alone: {'yes' if ddp['same_as_plain'] else 'NO'}")))
    else:
        rows.append(("CUDA-tensor DDP step, world 1", "not measured"))

    st = load(os.path.join(json_dir, "staging.json"))
    if st:
        res["staging"] = st
        def g(k):
            return "n/a" if st.get(k) is None else f"{st[k]:.1f}"
        rows.append((f"checkpoint staging GPU->host, {st['bytes'] >> 20} MiB: pinned pool buffer",
                     f"{g('pool_pinned_gbs')} GB/s {st.get('pool_pinned_error', '')}".rstrip()))
        rows.append(("  pageable pool buffer / today's to(kCPU)+memcpy / cudaMallocHost",
                     f"{g('pool_pageable_gbs')} / {g('to_cpu_then_pool_gbs')} / "
                     f"{g('cuda_host_alloc_gbs')} GB/s"))
    else:
        rows.append(("checkpoint staging GPU->host", "not measured"))

    cnn = {}
    for kind in ("ddp", "plain"):
        c, nc = median_of(json_dir, f"cohort-{kind}-*.json")
        t, nt = median_of(json_dir, f"torch-{kind}-*.json")
        torch_version = next((d.get("torch") for d in map(load, glob.glob(os.path.join(
            json_dir, f"torch-{kind}-*.json"))) if d), "?")
        cnn[kind] = {"cohort_ms": c, "torch_ms": t, "rounds": min(nc, nt), "torch": torch_version}
        label = "DDP world 1" if kind == "ddp" else "plain (no DDP)"
        if c and t:
            cnn[kind]["ratio_cohort_over_torch"] = c / t
            rows.append((f"Fashion-MNIST CNN step, batch 64, {label}",
                         f"cohort {c:.3f} ms, PyTorch {torch_version} {t:.3f} ms: "
                         f"cohort/PyTorch {c / t:.2f}x ({min(nc, nt)} rounds)"))
        else:
            rows.append((f"Fashion-MNIST CNN step, {label}", "not measured"))
    res["cnn"] = cnn

    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n== GPU check: {sum(s['status'] == 'ok' for s in steps)} of {len(steps)} steps ok, "
          f"{total} s")
    print(f"{'step':<14}{'status':<9}{'secs':>5}  note")
    for s in steps:
        print(f"{s['step']:<14}{s['status']:<9}{s['seconds']:>5}  {s['note']}")
    w = max(len(r[0]) for r in rows)
    print(f"\n{'measurement':<{w}}  value")
    for m, v in rows:
        print(f"{m:<{w}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
