#!/usr/bin/env python3
"""The generated files in examples/k8s/ are exactly what `cohort render` makes of their sources.

Each row of GENERATED is (file, the render arguments, run from the repository root). The test
renders each one and compares the bytes with the committed file; on a difference it prints the
first differing lines and how to regenerate. Then it proves it would notice: a copy of each file
with one hand-edited line must be reported as different.

Usage: rendered_examples_test.py --cohort build/bin/cohort [--update]
  --update rewrites the files from their sources instead of checking them.
Needs only the standard library.
"""
import argparse
import difflib
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# --token-secret keeps the output deterministic: no fresh token in a file in the repository.
GENERATED = [
    ("examples/k8s/indexed-job.yaml",
     ["examples/k8s/src/indexed-job.yaml", "--token-secret", "cohort-token"]),
    ("examples/k8s/mpijob.yaml",
     ["examples/k8s/src/mpijob.yaml", "--token-secret", "cohort-token"]),
]


def render(cohort, args):
    p = subprocess.run([cohort, "render"] + args, cwd=REPO, capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"cohort render {' '.join(args)} exited {p.returncode}: "
                           f"{p.stderr.decode().strip()}")
    return p.stdout


def difference(path, want, have):
    """None when equal, else a few lines saying where they differ."""
    if want == have:
        return None
    diff = list(difflib.unified_diff(have.decode(errors="replace").splitlines(),
                                     want.decode(errors="replace").splitlines(),
                                     f"{path} (committed)", f"{path} (rendered)", lineterm="", n=1))
    return "\n".join(diff[:20]) or f"{path}: differs (bytes only, e.g. line endings)"


def hand_edited(data):
    """The file with one line changed, as a person might: a value edited in place."""
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if b"image:" in line:
            lines[i] = line + b"-edited"
            return b"\n".join(lines)
    return data + b"# edited\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--update", action="store_true")
    args = ap.parse_args()
    failures = []
    for path, render_args in GENERATED:
        try:
            want = render(args.cohort, render_args)
        except RuntimeError as e:
            failures.append(str(e))
            continue
        full = os.path.join(REPO, path)
        if args.update:
            with open(full, "wb") as f:
                f.write(want)
            print(f"wrote {path}")
            continue
        with open(full, "rb") as f:
            have = f.read()
        diff = difference(path, want, have)
        if diff:
            failures.append(f"{path} is not what `cohort render {' '.join(render_args)}` makes; "
                            f"regenerate it with {sys.argv[0]} --cohort COHORT --update "
                            f"(and edit its source, not the file):\n{diff}")
        else:
            print(f"ok {path}: {len(have)} bytes, equal to its rendering")
        # The comparison must see a hand edit.
        if difference(path, want, hand_edited(want)) is None:
            failures.append(f"{path}: a hand-edited copy was not reported as different")
        else:
            print(f"ok {path}: a hand-edited copy is reported as different")
    for f in failures:
        print(f"FAIL {f}")
    if failures:
        return 1
    print(f"{len(GENERATED)} generated files checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
