#!/usr/bin/env python3
"""Checks the Dockerfile against what CI runs and what the binaries link (it cannot be built here).

Contract: the build stage's RUN steps are exactly the scripts .ci/run -> scripts/test run, in order;
the runtime stage installs scripts/runtime-packages and nothing else; every manifest in examples/k8s
uses cohort-train:<project() VERSION>; every library build/bin/cohort links directly resolves to a
package in the runtime list (skipped, with the reason, when build/bin/cohort is absent)."""
import argparse, glob, os, re, subprocess, sys

# Host-only libraries outside Debian (the optional CUDA toolkit): reported, not required in the list.
HOST_ONLY_PREFIXES = ("/usr/local/cuda",)

def fail(msg):
    print(f"dockerfile_test: {msg}", file=sys.stderr)
    sys.exit(1)

def stages(dockerfile):
    out = []
    for line in open(dockerfile).read().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out.append({"from": rest.strip(), "steps": []})
        elif out:
            out[-1]["steps"].append((word.upper(), rest.strip()))
    return out

def ci_scripts(root):
    # .ci/run execs scripts/test; scripts/test runs its scripts/* lines before ctest.
    run = open(os.path.join(root, ".ci/run")).read()
    m = re.search(r"^exec\s+(scripts/\S+)", run, re.M)
    if not m:
        fail(".ci/run no longer execs a scripts/ entry point; update this test")
    steps = []
    for line in open(os.path.join(root, m.group(1))).read().splitlines():
        line = line.strip()
        if line.startswith("ctest"):
            break
        if re.fullmatch(r"scripts/[\w-]+", line):
            steps.append(line)
    return steps

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--cohort", default="")
    ap.add_argument("--also", nargs="*", default=[], help="more binaries the image runs (fashion_mnist)")
    a = ap.parse_args()
    root = a.root
    st = stages(os.path.join(root, "Dockerfile"))
    if len(st) != 2 or any(s["from"].split()[0] != "debian:12" for s in st):
        fail(f"expected two stages FROM debian:12, got {[s['from'] for s in st]}; fix Dockerfile")
    build_runs = [r for w, r in st[0]["steps"] if w == "RUN"]
    want = [f"bash {s}" for s in ci_scripts(root)]
    if build_runs != want or not want:
        fail(f"build stage RUN steps {build_runs} differ from what CI runs {want}; make them equal")
    pkgs = [l.strip() for l in open(os.path.join(root, "scripts/runtime-packages"))
            if l.strip() and not l.startswith("#")]
    runtime_runs = " ".join(r for w, r in st[1]["steps"] if w == "RUN")
    if "apt-get install" not in runtime_runs or "/tmp/runtime-packages" not in runtime_runs \
            or not any(w == "COPY" and r.startswith("scripts/runtime-packages ") for w, r in st[1]["steps"]):
        fail("runtime stage must install exactly scripts/runtime-packages (COPY it, apt-get install from it)")
    if re.search(r"apt-get install[^&]*\s(lib|[a-z0-9-]+\s)", runtime_runs.split("xargs")[0]):
        fail("runtime stage names packages besides scripts/runtime-packages; put them in that list")
    version = re.search(r"project\([^)]*VERSION\s+([\d.]+)", open(os.path.join(root, "CMakeLists.txt")).read())
    image = f"cohort-train:{version.group(1)}"
    if image not in open(os.path.join(root, "Dockerfile")).read():
        fail(f"Dockerfile header does not document the image name {image}")
    manifests = sorted(glob.glob(os.path.join(root, "examples/k8s/*.yaml")))
    if not manifests:
        fail("no manifests in examples/k8s")
    for m in manifests:
        images = re.findall(r"^\s*image:\s*(\S+)", open(m).read(), re.M)
        if not images or any(i != image for i in images):
            fail(f"{m}: image {images} is not {image}; use the documented name")
    if not a.cohort or not os.path.exists(a.cohort):
        print(f"dockerfile_test: SKIP ldd check: {a.cohort or 'build/bin/cohort'} is absent")
        print(f"dockerfile_test: OK ({len(manifests)} manifests, {len(pkgs)} packages)")
        return
    needed, resolved = [], {}
    for binary in [a.cohort] + a.also:
        needed += re.findall(r"NEEDED\s+(\S+)", subprocess.run(["objdump", "-p", binary],
                             capture_output=True, text=True, check=True).stdout)
        resolved.update(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(["ldd", binary],
                        capture_output=True, text=True, check=True).stdout, re.M))
    needed = sorted(set(needed))
    for lib in needed:
        path = resolved.get(lib)
        if path is None:  # the dynamic loader itself
            continue
        if path.startswith(HOST_ONLY_PREFIXES):
            print(f"dockerfile_test: note: {lib} is host-only ({path}), not in the image")
            continue
        owner = None
        for cand in (path, os.path.realpath(path), "/usr" + path if not path.startswith("/usr") else path[4:]):
            r = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0]
                break
        if owner not in pkgs:
            fail(f"{lib} ({path}) comes from {owner or 'no package'}, not in scripts/runtime-packages; add it")
    print(f"dockerfile_test: OK ({len(manifests)} manifests, {len(pkgs)} packages, {len(needed)} libs)")

if __name__ == "__main__":
    main()
