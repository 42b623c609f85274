#!/usr/bin/env python3
"""Runs each manifest's own `cohort launch` command with --dry-run, in the environment each of
its pods (or MPI processes) would get from Kubernetes or the operator, and checks that the
launcher derives the intended world: every rank once, the same world size everywhere.

Usage: dry_run_manifests.py --cohort build/bin/cohort --manifests examples/k8s
"""
import argparse
import os
import re
import subprocess
import sys

import yaml

FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def container_env(container, job_name):
    """Literal values; secrets and downward-API fields become stand-ins."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = "secret-from-" + e["valueFrom"]["secretKeyRef"]["name"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = job_name
    return env


def dry_run(cohort, argv, env, what):
    """argv starts with `cohort launch`; returns the derived (rank, world) pairs of its workers."""
    assert argv[0] == "cohort" and argv[1] == "launch", argv
    cmd = [cohort, "launch", "--dry-run"] + argv[2:]
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("COHORT_", "OMPI_", "PET_", "SLURM_"))
             and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                           "JOB_COMPLETION_INDEX")}
    clean.update(env)
    p = subprocess.run(cmd, env=clean, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        fail(f"{what}: cohort launch --dry-run exited {p.returncode}: {p.stderr.strip()}")
        return []
    pairs = re.findall(r"COHORT_RANK=(\d+) .*?COHORT_WORLD_SIZE=(\d+)", p.stdout)
    if not pairs:
        fail(f"{what}: no workers in the dry run:\n{p.stdout}")
    return [(int(r), int(w)) for r, w in pairs]


def check_world(what, pairs, world):
    ranks = sorted(r for r, _ in pairs)
    if ranks != list(range(world)):
        fail(f"{what}: ranks {ranks}, want 0..{world - 1} once each")
    if {w for _, w in pairs} != {world}:
        fail(f"{what}: world sizes {sorted({w for _, w in pairs})}, want {world}")
    print(f"ok {what}: {len(ranks)} workers, ranks 0..{world - 1}, world {world}")


def indexed_job(cohort, docs):
    job = next(d for d in docs if d["kind"] == "Job")
    name = job["metadata"]["name"]
    nodes = job["spec"]["completions"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    argv = c.get("command", []) + c.get("args", [])
    pairs = []
    for index in range(nodes):
        env = container_env(c, name)
        env["JOB_COMPLETION_INDEX"] = str(index)  # set by Kubernetes on Indexed Job pods
        pairs += dry_run(cohort, argv, env, f"indexed-job pod {index}")
    if "--nproc-per-node" in argv:
        nproc = int(argv[argv.index("--nproc-per-node") + 1])
    else:  # `cohort render` sets it in the env
        nproc = int(container_env(c, name)["COHORT_NPROC_PER_NODE"])
    check_world("indexed-job", pairs, nodes * nproc)


def pytorchjob(cohort, docs):
    job = next(d for d in docs if d["kind"] == "PyTorchJob")
    name = job["metadata"]["name"]
    specs = job["spec"]["pytorchReplicaSpecs"]
    nproc = int(job["spec"]["nprocPerNode"])
    nodes = sum(s["replicas"] for s in specs.values())
    pairs = []
    node = 0
    for role in ("Master", "Worker"):
        spec = specs[role]
        c = spec["template"]["spec"]["containers"][0]
        port = next((p["containerPort"] for p in c.get("ports", [])
                     if p.get("name") == "pytorchjob-port"), 23456)
        for _ in range(spec["replicas"]):
            env = container_env(c, name)
            # What the training operator sets on every pod.
            env.update({"MASTER_ADDR": f"{name}-master-0", "MASTER_PORT": str(port),
                        "RANK": str(node), "WORLD_SIZE": str(nodes * nproc),
                        "PET_NPROC_PER_NODE": str(nproc), "PET_NNODES": str(nodes)})
            pairs += dry_run(cohort, c.get("command", []) + c.get("args", []), env,
                             f"pytorchjob {role.lower()} (node {node})")
            node += 1
    check_world("pytorchjob", pairs, nodes * nproc)


def mpijob(cohort, docs):
    job = next(d for d in docs if d["kind"] == "MPIJob")
    name = job["metadata"]["name"]
    slots = job["spec"]["slotsPerWorker"]
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    cmd = launcher.get("command", []) + launcher.get("args", [])
    np = int(cmd[cmd.index("-np") + 1])
    passed = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"]
    launch = cmd[cmd.index("cohort"):]
    pod_env = container_env(launcher, name)
    pairs = []
    for rank in range(np):
        # A process started by mpirun over SSH sees only what -x passes, plus Open MPI's own.
        env = {k: pod_env[k] for k in passed if k in pod_env}
        env.update({"OMPI_COMM_WORLD_SIZE": str(np), "OMPI_COMM_WORLD_RANK": str(rank),
                    "OMPI_COMM_WORLD_LOCAL_RANK": str(rank % slots),
                    "OMPI_COMM_WORLD_LOCAL_SIZE": str(slots),
                    "OMPI_MCA_ess_base_jobid": "4242"})
        pairs += dry_run(cohort, launch, env, f"mpijob rank {rank}")
    check_world("mpijob", pairs, np)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--manifests", required=True)
    args = ap.parse_args()
    checks = {"indexed-job.yaml": indexed_job, "pytorchjob.yaml": pytorchjob,
              "mpijob.yaml": mpijob}
    for file, check in checks.items():
        with open(os.path.join(args.manifests, file)) as f:
            check(args.cohort, [d for d in yaml.safe_load_all(f) if d])
    if FAILURES:
        sys.exit(f"{len(FAILURES)} manifest(s) would not form their world")
    print(f"every manifest forms its world ({len(checks)} checked)")


if __name__ == "__main__":
    main()
