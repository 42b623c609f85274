"""The torch.save / torch.load side of bench/checkpoint (Debian's /usr/bin/python3 with torch).

Builds the same state as the C++ side from its spec (names, dtypes, shapes), prints "ready", then
serves one command per line on stdin and answers "ok <seconds>" on stdout:
  save PATH   torch.save(state) to PATH, then flush + fsync the file and fsync its directory
  load PATH   drop PATH from the page cache (posix_fadvise DONTNEED), then torch.load(PATH)
Usage: torch_side.py SPEC.json
"""
import json
import os
import sys
import time

import torch

DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16,
          "bf16": torch.bfloat16, "i32": torch.int32, "i64": torch.int64, "u8": torch.uint8}


def build_state(spec):
    state = {}
    for t in spec["tensors"]:
        x = torch.empty(t["shape"], dtype=DTYPES[t["dtype"]])
        flat = x.view(-1)
        if flat.numel() > 0:
            flat.copy_(torch.arange(flat.numel(), dtype=torch.int64).remainder_(251).to(x.dtype))
        state[t["name"]] = x
    return state


def fsync_dir(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        state = build_state(json.load(f))
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, path = line.split()
        if cmd == "save":
            start = time.perf_counter()
            with open(path, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(path)
            seconds = time.perf_counter() - start
        elif cmd == "load":
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            start = time.perf_counter()
            loaded = torch.load(path)
            seconds = time.perf_counter() - start
            if len(loaded) != len(state):
                print("error: loaded %d tensors, saved %d" % (len(loaded), len(state)), flush=True)
                return 1
            del loaded
        else:
            print("error: unknown command " + cmd, flush=True)
            return 1
        print("ok %.6f" % seconds, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
