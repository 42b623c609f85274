#!/usr/bin/python3
"""Plots busbw against message size from collectives_bench's JSON: cohort solid, raw dashed.

Usage: plot_collectives.py results.json out.png  (uses Debian's python3-matplotlib)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    runs = data["runs"]
    ops = sorted({r["op"] for r in runs}, key=lambda o: ["allreduce", "allgather", "reducescatter",
                                                          "broadcast"].index(o))
    fig, axes = plt.subplots(1, len(ops), figsize=(5 * len(ops), 4), squeeze=False)
    colors = {"mpi": "tab:blue", "gloo": "tab:orange", "nccl": "tab:green"}
    for ax, op in zip(axes[0], ops):
        for run in (r for r in runs if r["op"] == op):
            rows = run["rows"]
            x = [r["bytes"] for r in rows]
            c = colors.get(run["backend"], None)
            ax.plot(x, [r["ours_oop_busbw"] for r in rows], "-o", ms=3, color=c,
                    label=f"cohort {run['backend']}")
            ax.plot(x, [r["raw_oop_busbw"] for r in rows], "--", color=c,
                    label=f"raw {run['backend']}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel("busbw (GB/s)")
        ax.set_title(f"{op}, {data['world']} ranks, {data['dtype']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"# wrote {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_collectives.py results.json out.png")
    main(sys.argv[1], sys.argv[2])
