"""The PyTorch side of bench/ddp/ddp_bench.py: bench/ddp/ddp_bench_worker.cc step for step.

The same models (nn.Sequential with the same layers in the same order, so the same buckets and,
from the same seed, the same initial values), the same synthetic batches (seed + 1 + rank), SGD
with the same settings, torch.nn.parallel.DistributedDataParallel over the gloo backend with its
default buckets (1 MiB first, then 25 MiB). The process group comes from env:// (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE), which the driver sets for plain processes (no torchrun). The timed
region is the training steps only, between a barrier and this rank's last optimizer step; the
job's time is the slowest rank's. After the timed steps the ranks' parameter hashes are compared.
Rank 0 writes the result to --out (JSON). Run with Debian's /usr/bin/python3.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def make_model(name):
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    return nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def init_params(params, seed):
    """ddp_bench_worker.cc's InitParams: PyTorch's default bounds, drawn explicitly in order."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for w, b in zip(params[0::2], params[1::2]):
            bound = 1.0 / math.sqrt(w[0].numel())
            w.uniform_(-bound, bound)
            b.uniform_(-bound, bound)


def input_shape(model, batch):
    return (batch, 1, 28, 28) if model == "cnn" else (batch, 784)


def param_hash(params):
    """A digest of every parameter's bytes in order: equal only if bitwise equal."""
    h = hashlib.blake2b(digest_size=8)
    for p in params:
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--plain", action="store_true", help="no DDP, no process group (world 1)")
    ap.add_argument("--out")
    o = ap.parse_args()

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if o.plain and world != 1:
        sys.exit(f"torch_ddp_worker: --plain runs at world size 1, not {world}")
    if not o.plain:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if not o.plain else 0

    model = make_model(o.model)
    params = list(model.parameters())
    init_params(params, o.seed)  # the same on every rank and on the cohort side
    ddp = model if o.plain else nn.parallel.DistributedDataParallel(model)
    nparams = sum(p.numel() for p in params)
    init_hash = param_hash(params)
    # Comparable with the cohort side's (same ops, same library): the same initial values.
    init_sum = torch.cat([p.detach().reshape(-1) for p in params]).double().sum().item()

    torch.manual_seed(o.seed + 1 + rank)
    xs, ys = [], []
    for _ in range(o.batches):  # in the cohort side's order: x then y, batch by batch
        xs.append(torch.randn(input_shape(o.model, o.batch)))
        ys.append(torch.randint(0, 10, (o.batch,), dtype=torch.int64))

    # Comparable with the cohort side's: the same batches.
    data_sum = sum(x.double().sum().item() + y.sum().item() for x, y in zip(xs, ys))

    opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum)
    phases = [0.0, 0.0, 0.0]
    loss = None

    def step(i):
        nonlocal loss
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(ddp(xs[i % o.batches]), ys[i % o.batches])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        phases[0] += t1 - t0
        phases[1] += t2 - t1
        phases[2] += t3 - t2

    for i in range(o.warmup):
        step(i)
    phases[:] = [0.0, 0.0, 0.0]
    if not o.plain:
        dist.barrier()
    cpu0 = time.process_time()  # every thread of the process, as the cohort side's
    t0 = time.perf_counter()
    for i in range(o.steps):
        step(o.warmup + i)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0

    def reduce(values, op):
        t = torch.tensor(values, dtype=torch.float64)
        if not o.plain:
            dist.all_reduce(t, op)
        return t.tolist()

    seconds = reduce([elapsed], dist.ReduceOp.MAX)[0]
    sums = reduce(phases + [loss.item(), cpu], dist.ReduceOp.SUM)
    per_step_ms = 1e3 / (world * o.steps)

    mine = param_hash(params)
    if o.plain:
        hashes = [mine]
    else:
        hashes = [None] * world
        dist.all_gather_object(hashes, mine)
    identical = all(h == hashes[0] for h in hashes)
    r = {"side": "pytorch-plain" if o.plain else "pytorch", "model": o.model, "params": nparams,
         "world": world, "backend": "gloo", "ddp": not o.plain, "batch": o.batch,
         "warmup": o.warmup, "steps": o.steps, "seconds": seconds,
         "samples_per_s": world * o.batch * o.steps / seconds, "step_ms": seconds * 1e3 / o.steps,
         "phases_ms": {"forward": sums[0] * per_step_ms, "backward": sums[1] * per_step_ms,
                       "optimizer": sums[2] * per_step_ms},
         "cpu_ms_per_step": sums[4] * per_step_ms,
         "loss": sums[3] / world, "init_hash": init_hash,
         "init_sum": init_sum, "data_sum": data_sum, "param_hashes": hashes,
         "params_identical": identical, "torch": torch.__version__}
    if not o.plain:
        # PyTorch's own measurement (its DDP logger samples iterations 10, 20, ...): comm = first
        # bucket launched -> last bucket done, overlap = the part of that before backward ended.
        log = ddp._get_ddp_logging_data()
        comm_ns = log.get("avg_backward_comm_time", 0)
        if comm_ns:
            r["ddp_logger"] = {
                "comm_ms": comm_ns / 1e6,
                "overlap_ms": log.get("avg_backward_compute_comm_overlap_time", 0) / 1e6,
                "overlap_fraction": log.get("avg_backward_compute_comm_overlap_time", 0) / comm_ns,
                "bucket_sizes": log.get("rebuilt_bucket_sizes", log.get("bucket_sizes"))}
    if not identical:
        root = torch.cat([p.detach().reshape(-1) for p in params])
        flat = root.clone()
        dist.broadcast(root, 0)
        diff = (flat - root).abs().max().item()
        print(f"torch_ddp_worker: FAILED: parameters differ across ranks after "
              f"{o.warmup + o.steps} steps: hashes {hashes}; rank {rank}'s largest |difference| "
              f"from rank 0 is {diff:g}", file=sys.stderr)
    if rank == 0 and o.out:
        with open(o.out, "w") as f:
            json.dump(r, f, indent=2)
    if rank == 0:
        print(f"torch_ddp_worker: {o.model} world {world}: {r['samples_per_s']:.1f} samples/s, "
              f"{r['step_ms']:.2f} ms/step{'' if identical else ', PARAMETERS DIFFER'}")
    if not o.plain:
        dist.barrier()  # rank 0 hosts the TCPStore: nobody leaves while another still uses it
    return 0 if identical else 2


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the destructors: torch 1.13 can deadlock freeing DDP's Reducer (its ProcessGroupGloo
    # joins a worker thread that waits for the GIL the freeing thread holds); seen here as a
    # rank that never exits after writing its result.
    os._exit(code)
