#!/usr/bin/env python3
"""`cohort render` as users run it: bad specs, formats, tokens.

- Each bad spec (nnodes 0, an unknown backend, no image, MIN above MAX, ...) exits non-zero with
  exactly one line on stderr naming the field, and prints nothing on stdout.
- --format json is a v1 List that Python's json reads, with the same objects as the YAML.
- Two renders hold different fresh tokens; the token is only in the Secret, and the pods read
  COHORT_TOKEN through a secretKeyRef, never as a literal value.
- --insecure-no-token emits no Secret and no COHORT_TOKEN; --token-secret references a Secret.

Usage: render_cli_test.py --cohort build/bin/cohort. Needs PyYAML.
"""
import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(REPO, "examples", "k8s", "src", "indexed-job.yaml")
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"FAIL {msg}")


def run(cohort, args, stdin=None):
    return subprocess.run([cohort, "render"] + args, input=stdin, capture_output=True, text=True,
                          timeout=60)


def with_spec(base, **changes):
    doc = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return yaml.safe_dump(doc, sort_keys=False)


def bad_cases(base):
    """(what, YAML text, extra args, text the one error line must contain)."""
    pod = {"spec": {"restartPolicy": "Always"}}
    sidecar = {"spec": {"containers": [{"name": "proxy", "image": "envoy"}]}}
    return [
        ("nnodes 0", with_spec(base, nnodes=0), [],
         "spec.nnodes: is 0; it must be an integer >= 1"),
        ("nnodes -3", with_spec(base, nnodes=-3), [], "spec.nnodes: is -3"),
        ("nnodes MIN above MAX", with_spec(base, nnodes="4:2"), [],
         'spec.nnodes: is "4:2": MIN is above MAX'),
        ("nnodes not a number", with_spec(base, nnodes="two"), [], "spec.nnodes: is 'two'"),
        ("unknown backend", with_spec(base, backend="rccl"), [],
         "spec.backend: 'rccl' is not a backend; use one of: auto, gloo, nccl, mpi, ps"),
        ("missing image", with_spec(base, image=None), [], "spec.image: is missing"),
        ("empty image", with_spec(base, image=""), [], "spec.image: is missing"),
        ("missing command", with_spec(base, command=None), [], "spec.command: must list"),
        ("nprocPerNode 0", with_spec(base, nprocPerNode=0), [], "spec.nprocPerNode: is 0"),
        ("unknown field", with_spec(base, nodes=2), [], "spec.nodes: unknown field"),
        ("ps without servers", with_spec(base, backend="ps"), [],
         "spec.psServers: backend ps needs parameter servers"),
        ("servers without ps", with_spec(base, psServers=2), [],
         "spec.psServers: is only for backend ps"),
        ("mpi with MIN:MAX", with_spec(base, backend="mpi", nnodes="2:4"), [],
         'spec.nnodes: is "2:4", but mpirun starts a fixed world'),
        ("env sets COHORT_TOKEN", with_spec(base, env=[{"name": "COHORT_TOKEN", "value": "x"}]),
         [], "spec.env[0]: COHORT_TOKEN is set by cohort render"),
        ("maxRestarts as text", with_spec(base, maxRestarts="three"), [], "spec.maxRestarts: is"),
        ("podTemplate overrides restartPolicy", with_spec(base, podTemplate=pod), [],
         "spec.podTemplate.spec.restartPolicy: cohort render sets it to \"Never\""),
        ("podTemplate sidecar", with_spec(base, podTemplate=sidecar), [],
         "spec.podTemplate.spec.containers[0]: only a container named cohort"),
        ("wrong kind", yaml.safe_dump(dict(base, kind="Job")), [], "apiVersion/kind: are"),
        ("bad name", yaml.safe_dump(dict(base, metadata={"name": "Fmnist_1"})), [],
         "metadata.name: 'Fmnist_1' must be lower-case"),
        ("duplicate key", "apiVersion: cohort.dev/v1alpha1\nkind: TrainingJob\nkind: Job\n", [],
         "line 3, column 1: duplicate key 'kind'"),
        ("YAML syntax error", "spec: [\n", [], "line 2"),
        ("two documents", yaml.safe_dump(base) + "---\n" + yaml.safe_dump(base), [],
         "has 2 YAML documents"),
        ("--token-secret with --insecure-no-token", yaml.safe_dump(base),
         ["--token-secret", "t", "--insecure-no-token"], "excludes"),
        ("bad --token-secret", yaml.safe_dump(base), ["--token-secret", "Not_A_Name"],
         "--token-secret 'Not_A_Name' is not a Secret name"),
        ("unknown --format", yaml.safe_dump(base), ["--format", "xml"], "--format"),
    ]


def check_bad(cohort, base, tmp):
    for what, text, extra, expect in bad_cases(base):
        path = os.path.join(tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(text)
        p = run(cohort, [path] + extra)
        lines = p.stderr.splitlines()
        if p.returncode == 0 or p.stdout or len(lines) != 1 or expect not in lines[0]:
            fail(f"bad spec '{what}': exit {p.returncode}, stdout {len(p.stdout)} bytes, stderr "
                 f"{p.stderr!r}; want a non-zero exit, no stdout, one line with {expect!r}")
        else:
            print(f"ok bad spec '{what}': exit {p.returncode}: {lines[0]}")
    p = run(cohort, [os.path.join(tmp, "absent.yaml")])
    if p.returncode == 0 or p.stdout or "cannot read" not in p.stderr:
        fail(f"a missing file: exit {p.returncode}, stderr {p.stderr!r}")


def containers(doc):
    spec = doc.get("spec", {})
    templates = [spec.get("template")] + [r.get("template") for r in
                                          spec.get("mpiReplicaSpecs", {}).values()]
    # The ones that run cohort or mpirun (an MPIJob's workers run only sshd).
    return [c for t in templates if t for c in t["spec"]["containers"]
            if {"cohort", "mpirun"} & set(c.get("command", []))]


def check_tokens(cohort, text):
    """Fresh tokens, only in the Secret; the pods read them through a secretKeyRef."""
    outs = [run(cohort, ["-"], stdin=text) for _ in range(2)]
    if any(p.returncode for p in outs):
        fail(f"render of stdin failed: {[p.stderr for p in outs]}")
        return
    tokens = []
    for p in outs:
        docs = [d for d in yaml.safe_load_all(p.stdout) if d]
        secret = docs[0]
        if secret["kind"] != "Secret" or secret["type"] != "Opaque":
            fail(f"the first object is {secret['kind']}, not an Opaque Secret")
            return
        token = secret["stringData"]["token"]
        tokens.append(token)
        if not re.fullmatch(r"[0-9a-f]{32}", token):
            fail(f"the token {token!r} is not 32 hex digits")
        if p.stdout.count(token) != 1:
            fail(f"the token appears {p.stdout.count(token)} times in the output, want once")
        for doc in docs[1:]:
            for c in containers(doc):
                env = {e["name"]: e for e in c.get("env", [])}
                ref = env.get("COHORT_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
                if "value" in env.get("COHORT_TOKEN", {}) or ref != {
                        "name": secret["metadata"]["name"], "key": "token"}:
                    fail(f"{doc['kind']} container {c['name']}: COHORT_TOKEN is "
                         f"{env.get('COHORT_TOKEN')}, want only a secretKeyRef to the Secret")
    if tokens[0] == tokens[1]:
        fail(f"two renders gave the same token {tokens[0]}")
    else:
        print("ok two renders: different 32-digit tokens, each only in its Secret, read by "
              "secretKeyRef")


def check_formats(cohort, text, tmp):
    path = os.path.join(tmp, "job.yaml")
    with open(path, "w") as f:
        f.write(text)
    y = run(cohort, [path, "--token-secret", "cohort-token"])
    j = run(cohort, [path, "--token-secret", "cohort-token", "--format", "json"])
    if y.returncode or j.returncode:
        fail(f"render failed: {y.stderr} {j.stderr}")
        return
    listed = json.loads(j.stdout)
    docs = [d for d in yaml.safe_load_all(y.stdout) if d]
    if listed.get("apiVersion") != "v1" or listed.get("kind") != "List":
        fail(f"--format json: apiVersion {listed.get('apiVersion')} kind {listed.get('kind')}")
    elif listed["items"] != docs:
        fail("--format json's items differ from the YAML stream's documents")
    elif [d["kind"] for d in docs] != ["Service", "Job"]:
        fail(f"--token-secret: objects {[d['kind'] for d in docs]}, want Service, Job")
    else:
        print(f"ok --format json: a v1 List of {len(docs)} items equal to the YAML documents")
    if y.stdout != run(cohort, [path, "--token-secret", "cohort-token"]).stdout:
        fail("--token-secret: two renders differ")
    insecure = run(cohort, [path, "--insecure-no-token"])
    objects = [d for d in yaml.safe_load_all(insecure.stdout) if d]
    if insecure.returncode or "Secret" in [d["kind"] for d in objects] or "COHORT_TOKEN" in (
            json.dumps(objects)):
        fail(f"--insecure-no-token: exit {insecure.returncode}, a Secret or COHORT_TOKEN is there")
    elif "--insecure-store" not in insecure.stdout:
        fail("--insecure-no-token: the launcher is not told --insecure-store")
    else:
        print("ok --insecure-no-token: no Secret, no COHORT_TOKEN, cohort launch --insecure-store")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    args = ap.parse_args()
    with open(SOURCE) as f:
        base = yaml.safe_load(f)
    with tempfile.TemporaryDirectory() as tmp:
        check_bad(args.cohort, base, tmp)
        check_formats(args.cohort, yaml.safe_dump(base), tmp)
    check_tokens(args.cohort, yaml.safe_dump(base))
    check_tokens(args.cohort, with_spec(base, backend="mpi"))
    check_tokens(args.cohort, with_spec(base, backend="ps", psServers=3, nnodes=3))
    if FAILURES:
        print(f"FAILED ({len(FAILURES)})")
        return 1
    print("cohort render's CLI behaves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
