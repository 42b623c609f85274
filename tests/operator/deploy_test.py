#!/usr/bin/env python3
"""operator/deploy/ is valid and means what the operator needs.

- Every document of operator/deploy/*.yaml validates, strictly (Draft4Validator), against the vendored
  Kubernetes v1.32.2 standalone-strict schema of its kind (schemas/, sha256 checked against its README).
- The CRD is structural: every node of the schema has a type, except int-or-string and preserve-unknown
  nodes; it has the status subresource and the printer columns Phase, Nodes, Restarts, Age.
- The CRD's openAPIV3Schema, made strict (additionalProperties: false where properties are listed and
  unknown fields are not preserved; x-kubernetes-int-or-string as integer|string), accepts every
  TrainingJob in examples/k8s/src/ and rejects mutated copies (a misspelt field, a list for nnodes, a
  number for image, a string for maxRestarts).
- RBAC is least privilege: no '*', the verbs listed here and no more, the Lease only in a namespaced Role;
  the bindings and the Deployment name the ServiceAccount.
Prints one line per problem and exits 1 if there is any. Needs PyYAML and jsonschema.
"""

import argparse
import copy
import glob
import hashlib
import json
import os
import re
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:
    print(f"deploy_test.py: {e} (in {sys.executable}); run it with a Python that has PyYAML and "
          "jsonschema", file=sys.stderr)
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCHEMA_OF = {
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "customresourcedefinition-apiextensions-v1",
    ("apps/v1", "Deployment"): "deployment-apps-v1",
    ("v1", "ServiceAccount"): "serviceaccount-v1",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "clusterrole-rbac-v1",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "clusterrolebinding-rbac-v1",
    ("rbac.authorization.k8s.io/v1", "Role"): "role-rbac-v1",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebinding-rbac-v1",
}
# What the operator does, and nothing more (operator/reconciler.cc, leader.cc, controller.cc).
CLUSTER_RULES = {
    ("cohort.dev", "trainingjobs"): {"get", "list", "watch"},
    ("cohort.dev", "trainingjobs/status"): {"get", "update", "patch"},
    ("cohort.dev", "trainingjobs/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete", "patch"},
    ("kubeflow.org", "mpijobs"): {"get", "list", "watch", "create", "delete", "patch"},
    ("", "services"): {"get", "create"},
    ("", "secrets"): {"get", "create"},
    ("", "pods"): {"get", "list", "watch"},
}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}

problems = []


def problem(text):
    problems.append(text)
    print(text)


def check_schema_hashes(schemas):
    readme = open(os.path.join(schemas, "README.md")).read()
    for name in SCHEMA_OF.values():
        data = open(os.path.join(schemas, name + ".json"), "rb").read()
        digest = hashlib.sha256(data).hexdigest()
        if not re.search(rf"`{re.escape(name)}.json`.*{digest}", readme):
            problem(f"schemas/{name}.json: sha256 {digest} is not the one in schemas/README.md")


def load_deploy(deploy):
    docs = []
    for path in sorted(glob.glob(os.path.join(deploy, "*.yaml"))):
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is not None:
                    docs.append((os.path.basename(path), i, doc))
    return docs


def validate_kinds(docs, schemas):
    for file, i, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in SCHEMA_OF:
            problem(f"{file}[{i}]: no schema for {key}")
            continue
        schema = json.load(open(os.path.join(schemas, SCHEMA_OF[key] + ".json")))
        for e in jsonschema.Draft4Validator(schema).iter_errors(doc):
            problem(f"{file}[{i}] {key[1]}: {'/'.join(map(str, e.absolute_path))}: {e.message}")


def structural(node, path, out):
    if not isinstance(node, dict):
        return
    if "type" not in node and not node.get("x-kubernetes-int-or-string") and \
            not node.get("x-kubernetes-preserve-unknown-fields"):
        out.append(f"crd.yaml: schema node {path or '$'} has no type (not structural)")
    for name, child in node.get("properties", {}).items():
        structural(child, f"{path}.{name}", out)
    if isinstance(node.get("items"), dict):
        structural(node["items"], path + "[]", out)
    if isinstance(node.get("additionalProperties"), dict):
        structural(node["additionalProperties"], path + ".*", out)


def strict(node):
    """A copy that the validator reads as the API server would prune: unknown fields are errors."""
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) if k in ("items", "additionalProperties") else v for k, v in node.items()}
    if "properties" in node:
        node["properties"] = {k: strict(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
    if node.get("x-kubernetes-int-or-string"):
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return node


def check_crd(docs):
    crds = [d for _, _, d in docs if d.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        problem(f"operator/deploy/ has {len(crds)} CRDs, want 1")
        return None
    crd = crds[0]
    spec = crd["spec"]
    if (spec["group"], spec["names"]["kind"], crd["metadata"]["name"]) != \
            ("cohort.dev", "TrainingJob", "trainingjobs.cohort.dev"):
        problem("crd.yaml: not cohort.dev TrainingJob (trainingjobs.cohort.dev)")
    versions = [v for v in spec["versions"] if v["name"] == "v1alpha1"]
    if len(versions) != 1 or not versions[0].get("served") or not versions[0].get("storage"):
        problem("crd.yaml: v1alpha1 must be served and stored")
        return None
    v = versions[0]
    if v.get("subresources", {}).get("status") != {}:
        problem("crd.yaml: no status subresource")
    columns = [c["name"] for c in v.get("additionalPrinterColumns", [])]
    if columns != ["Phase", "Nodes", "Restarts", "Age"]:
        problem(f"crd.yaml: printer columns {columns}, want Phase, Nodes, Restarts, Age")
    schema = v["schema"]["openAPIV3Schema"]
    out = []
    structural(schema, "", out)
    for text in out:
        problem(text)
    fields = set(schema["properties"]["spec"]["properties"])
    want = {"image", "command", "args", "nnodes", "nprocPerNode", "backend", "resources",
            "checkpointURI", "maxRestarts", "psServers", "register", "env", "podTemplate", "suspend"}
    if fields != want:
        problem(f"crd.yaml: spec fields {sorted(fields)}, want {sorted(want)}")
    if not schema["properties"]["spec"]["properties"]["podTemplate"].get(
            "x-kubernetes-preserve-unknown-fields"):
        problem("crd.yaml: spec.podTemplate must keep unknown fields (a pod template passthrough)")
    return strict(schema)


def check_examples(schema):
    validator = jsonschema.Draft4Validator(schema)
    jobs = []
    for path in sorted(glob.glob(os.path.join(REPO, "examples/k8s/src/*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") == "TrainingJob":
                    jobs.append((os.path.relpath(path, REPO), doc))
    if not jobs:
        problem("examples/k8s/src/ has no TrainingJob")
    for name, doc in jobs:
        for e in validator.iter_errors(doc):
            problem(f"{name}: the CRD refuses {'/'.join(map(str, e.absolute_path))}: {e.message}")
    if not jobs:
        return 0
    base = jobs[0][1]
    mutations = {
        "a misspelt field": lambda d: d["spec"].__setitem__("nprocsPerNode", 2),
        "a list for nnodes": lambda d: d["spec"].__setitem__("nnodes", [2]),
        "a number for image": lambda d: d["spec"].__setitem__("image", 3),
        "a string for maxRestarts": lambda d: d["spec"].__setitem__("maxRestarts", "3"),
        "an unknown resources key": lambda d: d["spec"].setdefault("resources", {}).__setitem__("cpus", 1),
    }
    rejected = 0
    for what, mutate in mutations.items():
        doc = copy.deepcopy(base)
        mutate(doc)
        if validator.is_valid(doc):
            problem(f"the CRD's schema accepts {what}")
        else:
            rejected += 1
    for ok in ({"nnodes": "2:4"}, {"nnodes": 3}, {"podTemplate": {"spec": {"nodeSelector": {"a": "b"}}}}):
        doc = copy.deepcopy(base)
        doc["spec"].update(ok)
        if not validator.is_valid(doc):
            problem(f"the CRD's schema refuses {ok}")
    return rejected


def rules_of(doc):
    out = {}
    for rule in doc.get("rules", []):
        for group in rule.get("apiGroups", []):
            for res in rule.get("resources", []):
                out.setdefault((group, res), set()).update(rule.get("verbs", []))
    return out


def check_rbac(docs):
    by_kind = {}
    for _, _, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind, want in (("ClusterRole", CLUSTER_RULES), ("Role", LEASE_RULES)):
        roles = by_kind.get(kind, [])
        if len(roles) != 1:
            problem(f"operator/deploy/ has {len(roles)} {kind}s, want 1")
            continue
        got = rules_of(roles[0])
        if any("*" in k[0] or "*" in k[1] or "*" in v for k, v in got.items()):
            problem(f"{kind}: a wildcard ('*') is not least privilege")
        if got != want:
            problem(f"{kind} {roles[0]['metadata']['name']}: rules {sorted((k, sorted(v)) for k, v in got.items())}, "
                    f"want {sorted((k, sorted(v)) for k, v in want.items())}")
    sas = by_kind.get("ServiceAccount", [])
    if len(sas) != 1:
        problem(f"operator/deploy/ has {len(sas)} ServiceAccounts, want 1")
        return
    sa = (sas[0]["metadata"]["name"], sas[0]["metadata"]["namespace"])
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        for b in by_kind.get(kind, []):
            subjects = [(s["name"], s.get("namespace")) for s in b["subjects"]]
            role = by_kind.get(role_kind, [{}])[0].get("metadata", {}).get("name")
            if subjects != [sa] or b["roleRef"]["name"] != role:
                problem(f"{kind} {b['metadata']['name']}: binds {subjects} to {b['roleRef']['name']}, "
                        f"want {[sa]} to {role}")
    for role in by_kind.get("Role", []) + by_kind.get("RoleBinding", []):
        if role["metadata"].get("namespace") != sa[1]:
            problem(f"{role['kind']} {role['metadata']['name']}: not in the operator's namespace {sa[1]}")
    for d in by_kind.get("Deployment", []):
        pod = d["spec"]["template"]["spec"]
        if (pod.get("serviceAccountName"), d["metadata"]["namespace"]) != sa:
            problem(f"Deployment {d['metadata']['name']}: runs as {pod.get('serviceAccountName')}, want {sa}")
        command = pod["containers"][0]["command"]
        if not command[0].endswith("/cohort-operator") or f"--lease-namespace={sa[1]}" not in command:
            problem(f"Deployment: command {command} is not cohort-operator with --lease-namespace={sa[1]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--deploy", default=os.path.join(REPO, "operator/deploy"))
    parser.add_argument("--schemas", default=os.path.join(HERE, "schemas"))
    args = parser.parse_args()
    check_schema_hashes(args.schemas)
    docs = load_deploy(args.deploy)
    validate_kinds(docs, args.schemas)
    schema = check_crd(docs)
    rejected = check_examples(schema) if schema else 0
    check_rbac(docs)
    print(f"validated {len(docs)} documents of operator/deploy; {rejected} mutated TrainingJobs "
          f"rejected; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
