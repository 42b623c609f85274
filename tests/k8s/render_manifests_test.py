#!/usr/bin/env python3
"""`cohort render` output for every backend validates strictly against tests/k8s/schemas, and its
`cohort launch` commands form their world under --dry-run.

Renders variants of examples/k8s/src/indexed-job.yaml (each backend; ps with 1 and 3 servers;
nnodes 1, 3 and "2:4"; GPUs; a podTemplate; --token-secret; --insecure-no-token), in YAML and in
JSON, and checks every object with validate_manifests.py's schema and contract checks,
including the Secret. Also checks what the schemas cannot: the two formats hold the same
objects; a Secret is emitted exactly when it should be, and every secretKeyRef names it (or
the --token-secret one); the node count, the ps addresses and the MPI world agree with the spec.

Usage: render_manifests_test.py --cohort build/bin/cohort [--schemas tests/k8s/schemas]
Needs PyYAML and jsonschema.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dry_run_manifests as dr  # noqa: E402
import validate_manifests as vm  # noqa: E402

SOURCE = os.path.join(vm.REPO, "examples", "k8s", "src", "indexed-job.yaml")
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"FAIL {msg}")


def variants():
    """(what, spec changes, extra render args)."""
    pod_template = {"metadata": {"labels": {"team": "ml"}},
                    "spec": {"nodeSelector": {"pool": "train"},
                             "volumes": [{"name": "data", "emptyDir": {}}],
                             "containers": [{"name": "cohort", "volumeMounts": [
                                 {"name": "data", "mountPath": "/data"}]}]}}
    yield "auto", {}, []
    yield "gloo, 1 node", {"backend": "gloo", "nnodes": 1}, []
    yield "nccl, 3 nodes, 4 GPUs", {"backend": "nccl", "nnodes": 3, "resources": {"gpus": 4}}, []
    yield "ps, 1 server", {"backend": "ps", "psServers": 1}, []
    yield "ps, 3 servers, 3 nodes", {"backend": "ps", "psServers": 3, "nnodes": 3}, []
    yield "mpi", {"backend": "mpi"}, []
    yield "mpi, 3 nodes x 1, GPUs", {"backend": "mpi", "nnodes": 3, "nprocPerNode": 1,
                                     "resources": {"gpus": 1}}, []
    yield "gloo, nnodes 2:4", {"backend": "gloo", "nnodes": "2:4"}, []
    yield "auto, podTemplate", {"podTemplate": pod_template, "register": "fmnist"}, []
    yield "mpi, podTemplate", {"backend": "mpi", "podTemplate": pod_template}, []
    yield "auto, --token-secret", {}, ["--token-secret", "my-token"]
    yield "ps, --token-secret", {"backend": "ps", "psServers": 2}, ["--token-secret", "my-token"]
    yield "mpi, --token-secret", {"backend": "mpi"}, ["--token-secret", "my-token"]
    yield "auto, --insecure-no-token", {}, ["--insecure-no-token"]
    yield "ps, --insecure-no-token", {"backend": "ps", "psServers": 2}, ["--insecure-no-token"]
    yield "mpi, --insecure-no-token", {"backend": "mpi"}, ["--insecure-no-token"]


def render(cohort, path, args):
    p = subprocess.run([cohort, "render", path] + args, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def secret_refs(doc):
    """Names of the Secrets the document's containers read, from every secretKeyRef."""
    out = []

    def walk(v):
        if isinstance(v, dict):
            if "secretKeyRef" in v:
                out.append(v["secretKeyRef"]["name"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(doc)
    return out


def check_tokens(what, docs, args):
    secrets = [d for d in docs if d["kind"] == "Secret"]
    refs = [r for d in docs for r in secret_refs(d)]
    if "--insecure-no-token" in args:
        if secrets or refs:
            fail(f"{what}: --insecure-no-token, yet a Secret or secretKeyRef is there")
        return
    want = args[args.index("--token-secret") + 1] if "--token-secret" in args else None
    if want is None:
        if len(secrets) != 1 or len(secrets[0]["stringData"]["token"]) != 32:
            fail(f"{what}: want one Secret with a 32-digit token, got {secrets}")
            return
        want = secrets[0]["metadata"]["name"]
    elif secrets:
        fail(f"{what}: --token-secret, yet a Secret is emitted")
    if not refs or set(refs) != {want}:
        fail(f"{what}: secretKeyRefs {refs}, want each to name {want}")


def check_world(what, spec, docs):
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    nnodes = str(spec.get("nnodes", 1))
    top = int(nnodes.split(":")[-1])
    if spec.get("backend") == "mpi":
        mpi = next(d for d in docs if d["kind"] == "MPIJob")["spec"]
        got = (mpi["mpiReplicaSpecs"]["Worker"]["replicas"], mpi["slotsPerWorker"])
        if got != (top, spec.get("nprocPerNode", 4)):
            fail(f"{what}: MPIJob workers x slots {got}, want {(top, spec.get('nprocPerNode', 4))}")
        return
    job = jobs.get("fmnist-indexed")
    if not job or job["spec"]["completions"] != top or job["spec"]["parallelism"] != top:
        fail(f"{what}: the Indexed Job does not run {top} pods")
        return
    env = vm.env_of(job["spec"]["template"]["spec"]["containers"][0])
    if env["COHORT_NNODES"]["value"] != nnodes:
        fail(f"{what}: COHORT_NNODES {env['COHORT_NNODES']}, want {nnodes}")
    servers = spec.get("psServers", 0)
    if servers:
        ps = jobs.get("fmnist-indexed-ps")
        want = ",".join(f"fmnist-indexed-ps-{i}.fmnist-indexed-ps:29600" for i in range(servers))
        if not ps or ps["spec"]["completions"] != servers:
            fail(f"{what}: no ps Job of {servers} pods")
        elif env.get("COHORT_PS_SERVERS", {}).get("value") != want:
            fail(f"{what}: COHORT_PS_SERVERS {env.get('COHORT_PS_SERVERS')}, want {want}")
        elif ps["spec"]["template"]["spec"]["subdomain"] != "fmnist-indexed-ps":
            fail(f"{what}: ps pods are not in the subdomain fmnist-indexed-ps")
    elif "fmnist-indexed-ps" in jobs:
        fail(f"{what}: a ps Job without psServers")


def check_dry_run(cohort, what, spec, docs):
    """The workers' own `cohort launch` commands, run with --dry-run in each pod's env, form
    the world (the Indexed Job's pods, or the MPIJob's processes)."""
    before = len(dr.FAILURES)
    if spec.get("backend") == "mpi":
        dr.mpijob(cohort, docs)
    else:
        job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] ==
                   "fmnist-indexed")
        c = job["spec"]["template"]["spec"]["containers"][0]
        nodes = job["spec"]["completions"]
        pairs = []
        for index in range(nodes):
            env = dr.container_env(c, "fmnist-indexed")
            env["JOB_COMPLETION_INDEX"] = str(index)
            pairs += dr.dry_run(cohort, c["command"], env, f"{what}: pod {index}")
        nproc = int(dr.container_env(c, "")["COHORT_NPROC_PER_NODE"])
        if ":" not in str(spec.get("nnodes", "")):  # elastic: the world is known only at runtime
            dr.check_world(what, pairs, nodes * nproc)
    for line in dr.FAILURES[before:]:
        fail(line)


def check_ps_server(cohort, what, docs):
    """The ps Job's `cohort ps-server` command, with the shard the downward API gives its last
    pod and a free port, really starts and listens (then is stopped)."""
    ps = next((d for d in docs if d["kind"] == "Job"
               and d["metadata"]["name"] == "fmnist-indexed-ps"), None)
    if ps is None:
        return
    c = ps["spec"]["template"]["spec"]["containers"][0]
    shards = c["command"][c["command"].index("--shards") + 1]
    last = str(int(shards) - 1)
    argv = [a.replace("$(PS_SHARD)", last) for a in c["command"]]
    argv[argv.index("--port") + 1] = "0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    env.update({k: v for k, v in dr.container_env(c, "").items() if k != "PS_SHARD"})
    p = subprocess.Popen([cohort] + argv[1:], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    if f"shard {last} of {shards} listening" not in line:
        fail(f"{what}: {' '.join(argv)} did not start: {line!r} {err.strip()!r}")
    else:
        print(f"ok {what}: the ps Job's command serves: {line.strip()}")


def check_variant(cohort, registry, base, tmp, what, changes, args):
    before = len(FAILURES)
    doc = copy.deepcopy(base)
    doc["spec"].update(changes)
    if doc["spec"].get("backend") == "mpi":
        doc["spec"]["env"] = [{"name": "OPENBLAS_NUM_THREADS", "value": "1"}]
    path = os.path.join(tmp, "job.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    try:
        docs = [d for d in vm.load_yaml_documents(render(cohort, path, args)) if d]
        listed = json.loads(render(cohort, path, args + ["--format", "json"]))
    except (RuntimeError, yaml.YAMLError, json.JSONDecodeError) as e:
        fail(f"{what}: cannot render: {e}")
        return 0
    lines = []
    for index, d in enumerate(docs):
        errors = vm.schema_errors(registry, d)
        # Without a token the contract's "COHORT_TOKEN from a Secret" rule is meant to fail.
        if not errors and "--insecure-no-token" not in args:
            errors = vm.contract_errors(d, docs)
        lines += [f"{what}: document {index} ({vm.describe(d)}): {p}: {m}" for p, m in errors]
    for line in lines:
        fail(line)
    if listed.get("kind") != "List" or listed.get("apiVersion") != "v1":
        fail(f"{what}: --format json is not a v1 List")
    elif [d for d in listed["items"] if d["kind"] != "Secret"] != [
            d for d in docs if d["kind"] != "Secret"]:
        fail(f"{what}: --format json holds other objects than the YAML stream")
    check_tokens(what, docs, args)
    check_world(what, doc["spec"], docs)
    check_dry_run(cohort, what, doc["spec"], docs)
    check_ps_server(cohort, what, docs)
    if len(FAILURES) > before:
        return 0
    kinds = ", ".join(d["kind"] for d in docs)
    print(f"ok {what}: {len(docs)} objects ({kinds}) valid")
    return len(docs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--schemas", default=os.path.join(vm.HERE, "schemas"))
    args = ap.parse_args()
    for line in vm.check_schema_checksums(args.schemas):
        fail(line)
    registry = vm.load_schemas(args.schemas)
    if ("v1", "Secret") not in registry:
        fail("no Secret schema in the schemas folder")
    with open(SOURCE) as f:
        base = yaml.safe_load(f)
    count = 0
    seen = set()
    with tempfile.TemporaryDirectory() as tmp:
        for what, changes, extra in variants():
            seen.add(changes.get("backend", "auto"))
            count += check_variant(args.cohort, registry, base, tmp, what, changes, extra)
    missing = set(vm_backends()) - seen
    if missing:
        fail(f"backends never rendered: {sorted(missing)}")
    if FAILURES:
        print(f"FAILED ({len(FAILURES)})")
        return 1
    print(f"validated {count} rendered objects, every backend ({', '.join(sorted(seen))})")
    return 0


def vm_backends():
    return ["auto", "gloo", "nccl", "ps", "mpi"]


if __name__ == "__main__":
    sys.exit(main())
