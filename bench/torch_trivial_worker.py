"""The torch side of bench/launch_bench.py: the trivial worker torchrun starts.

Joins the default process group with Gloo (env:// rendezvous from torchrun's MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE), passes one barrier, prints `connected <rank> <CLOCK_REALTIME ns>`
and exits: the counterpart of bench/launch_bench_worker.cc. Run with Debian's /usr/bin/python3.
"""
import os
import time

import torch.distributed as dist

dist.init_process_group("gloo")
dist.barrier()
# One write(2) for the whole line: print() writes the text and the newline separately when
# unbuffered (PYTHONUNBUFFERED), and the 8 workers share torchrun's stdout.
os.write(1, f"connected {dist.get_rank()} {time.time_ns()}\n".encode())
dist.destroy_process_group()
