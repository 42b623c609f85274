#!/usr/bin/env python3
"""PyTorch's side of bench/gpu/cnn_step_worker.cc: the Fashion-MNIST CNN (the architecture of
examples/fashion_mnist/model.cc and skeleton.py) trained on one synthetic batch on one device, the
same steps: zero_grad, forward, cross entropy, backward, SGD(lr 0.01, momentum 0.9), device
synchronize; prints and writes (--json) the median step time. --ddp wraps the model in PyTorch's
DistributedDataParallel at world 1 (NCCL on CUDA, Gloo on the CPU), as cohort's side does by default.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


class FashionCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = torch.nn.Linear(32 * 7 * 7, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 16 x 14 x 14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 32 x 7 x 7
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--ddp", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("torch_cnn_step: skipped: torch sees no CUDA device")
        return 0
    dev = torch.device("cuda:0" if a.device == "cuda" else "cpu")
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    torch.manual_seed(1234)
    model = FashionCnn().to(dev)
    if a.ddp:
        import torch.distributed as dist
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("nccl" if a.device == "cuda" else "gloo", rank=0, world_size=1)
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    ms, first, last = [], None, None
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sync()
        if i >= a.warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
        if i == 0:
            first = loss.item()
        last = loss.item()
    med = statistics.median(ms)
    print(f"torch_cnn_step: torch {torch.__version__} {'DDP world 1' if a.ddp else 'plain'} on {dev}: "
          f"median step {med:.3f} ms over {a.steps} steps (min {min(ms):.3f}), "
          f"loss {first:.4f} -> {last:.4f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"side": "torch", "torch": torch.__version__, "ddp": a.ddp, "device": str(dev),
                       "median_step_ms": med, "min_step_ms": min(ms), "first_loss": first,
                       "last_loss": last}, f)
    if a.ddp:
        torch.distributed.destroy_process_group()
    return 0 if last < first else 2


if __name__ == "__main__":
    sys.exit(main())
