#!/usr/bin/python3
"""Shows what virtio-balloon free page reporting does to writes into the page cache (issue 5).

On a VM that reports free memory to its host, memory that stays free for ~2 s is handed back,
and the next first touch of it faults on the host. This writes 1 GiB (then fsyncs) right after a
1 GiB file was deleted (its page cache freed a moment ago, still backed) and again after a pause
(freed memory reported), and prints both; on such a VM the copy into the page cache is ~10x
slower after the pause. That is why bench/checkpoint drops the page cache just before each save.
  python3 bench/checkpoint/free_page_reporting.py [--dir /tmp] [--pause 8] [--reps 3]
"""
import argparse
import os
import tempfile
import time

MIB = 1 << 20


def reported_gib():
    try:
        with open("/sys/module/page_reporting/parameters/reported_kib") as f:
            return int(f.read()) / (1 << 20)
    except OSError:
        return None


def write(path, buf, gib):
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(gib * 1024 // (len(buf) // MIB)):
        os.write(fd, buf)
    copied = time.perf_counter() - t
    os.fsync(fd)
    os.close(fd)
    return copied, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--pause", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    before = reported_gib()
    print("free page reporting: " + ("not active here" if before is None else
                                     f"on, {before:.1f} GiB reported to the host so far"))
    buf = os.urandom(16 * MIB)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        a, b = os.path.join(d, "a"), os.path.join(d, "b")
        for _ in range(args.reps):
            write(a, buf, 1)
            os.unlink(a)  # frees 1 GiB of page cache, still backed by the host
            hot = write(b, buf, 1)
            os.unlink(b)
            time.sleep(args.pause)  # freed memory is reported and handed back meanwhile
            cold = write(b, buf, 1)
            os.unlink(b)
            print(f"1 GiB right after a free: copy {hot[0]:.2f} s, with fsync {hot[1]:.2f} s | "
                  f"{args.pause:g} s after: copy {cold[0]:.2f} s, with fsync {cold[1]:.2f} s",
                  flush=True)
    after = reported_gib()
    if before is not None and after is not None:
        print(f"reported to the host during the run: {after - before:.1f} GiB")


if __name__ == "__main__":
    main()
