#!/usr/bin/env python3
"""Validates every document of examples/k8s/*.yaml offline, strictly, against the vendored schemas.

- Service, Job and Secret: the Kubernetes v1.32.2 "standalone-strict" JSON schemas, with
  Draft4Validator.
- PyTorchJob and MPIJob: the CRD's spec.versions[<the document's version>].schema.openAPIV3Schema,
  made strict on a deep copy at load time: `additionalProperties: false` on every object schema
  that has `properties` and no `x-kubernetes-preserve-unknown-fields: true` (the API server would
  silently prune an unknown field; here it is an error). Custom resources' metadata is checked
  against the ObjectMeta schema of the Job schema, as the API server does.
- A few rules the operators enforce in code, not in their CRDs (replica types, restartPolicy and
  cleanPodPolicy values), and cohort's own contract between the documents (Service name =
  subdomain = COHORT_RDZV_ENDPOINT's host, ...).
- An unknown apiVersion/kind, a duplicate YAML key, or a schema whose sha256 differs from
  schemas/README.md is an error.

Then it proves its own strictness: small mutated copies of the manifests (a misspelt field and a
wrong type for each kind, ...) must each be rejected with the expected error.

Prints one line per error (file, document index, kind/name, JSON path, message) and a summary:
"validated N documents in M files; K negative cases rejected". Exit status 0 when all is well.
Needs PyYAML and jsonschema (on the build machine: pyenv's python3).
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
    print(f"validate_manifests.py: {e} (in {sys.executable}); run it with a Python that has both "
          "PyYAML and jsonschema", file=sys.stderr)
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Rules the operators check in their admission/validation code rather than in the CRD schema.
# training-operator v1.9 (pkg/webhooks/pytorch): replica types Master and Worker only.
# mpi-operator v2beta1 (pkg/apis/kubeflow/validation): reads Launcher and Worker, ignores others.
# Both CRDs describe restartPolicy as "One of Always, OnFailure, Never and ExitCode" and
# cleanPodPolicy as None/Running/All without an enum.
OPERATOR_RULES = {
    ("kubeflow.org/v1", "PyTorchJob"): ("pytorchReplicaSpecs", ("Master", "Worker")),
    ("kubeflow.org/v2beta1", "MPIJob"): ("mpiReplicaSpecs", ("Launcher", "Worker")),
}
RESTART_POLICIES = ["Always", "OnFailure", "Never", "ExitCode"]
CLEAN_POD_POLICIES = ["None", "Running", "All"]
RDZV_PORT = 29500


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_documents(stream):
    return list(yaml.load_all(stream, Loader=UniqueKeyLoader))


def json_path(parts):
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            path += "." + part
        else:
            path += f"[{part!r}]"
    return path


# ---------------------------------------------------------------------------------------------
# Schemas

def check_schema_checksums(schema_dir):
    """Errors for schema files that are missing from, or differ from, the README's sha256 table."""
    readme = os.path.join(schema_dir, "README.md")
    errors, expected = [], {}
    row = re.compile(r"^\|\s*`([^`]+)`\s*\|.*\|\s*([0-9a-f]{64})\s*\|\s*$")
    try:
        with open(readme, encoding="utf-8") as f:
            for line in f:
                m = row.match(line)
                if m:
                    expected[m.group(1)] = m.group(2)
    except OSError as e:
        return [f"{readme}: cannot read the provenance table: {e.strerror}"]
    if not expected:
        errors.append(f"{readme}: no table rows with a sha256 found")
    present = sorted(n for n in os.listdir(schema_dir) if n != "README.md")
    for name in present:
        path = os.path.join(schema_dir, name)
        if name not in expected:
            errors.append(f"{path}: not listed in {readme}; add its provenance row with its sha256")
            continue
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != expected[name]:
            errors.append(f"{path}: sha256 {digest} differs from {expected[name]} in README.md: "
                          "the vendored schema was modified; restore the upstream file")
    for name in sorted(set(expected) - set(present)):
        errors.append(f"{os.path.join(schema_dir, name)}: listed in README.md but missing")
    return errors


def make_strict(schema):
    """Adds additionalProperties: false to every object schema with properties, in place.

    Walks only schema positions (properties, items, additionalProperties, allOf/anyOf/oneOf, not),
    so a field that happens to be called "properties" is not mistaken for a schema.
    """
    if not isinstance(schema, dict):
        return
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    for sub in schema.get("properties", {}).values():
        make_strict(sub)
    items = schema.get("items")
    for sub in items if isinstance(items, list) else [items]:
        make_strict(sub)
    make_strict(schema.get("additionalProperties"))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            make_strict(sub)
    make_strict(schema.get("not"))


def apply_operator_rules(api_kind, schema):
    spec = schema["properties"]["spec"]["properties"]
    field, replica_types = OPERATOR_RULES[api_kind]
    replicas = spec[field]
    replica_spec = replicas.pop("additionalProperties")  # an open map in the CRD
    replica_spec["properties"]["restartPolicy"]["enum"] = RESTART_POLICIES
    replicas["properties"] = {name: replica_spec for name in replica_types}
    replicas["additionalProperties"] = False
    spec["runPolicy"]["properties"]["cleanPodPolicy"]["enum"] = CLEAN_POD_POLICIES


def load_schemas(schema_dir):
    """Returns {(apiVersion, kind): validator}."""
    registry = {}
    for path in sorted(glob.glob(os.path.join(schema_dir, "*.json"))):
        with open(path, encoding="utf-8") as f:
            schema = json.load(f)
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            registry[(api, gvk["kind"])] = jsonschema.Draft4Validator(schema)
    job = registry.get(("batch/v1", "Job"))
    object_meta = job.schema["properties"]["metadata"] if job else None  # ObjectMeta, strict
    for path in sorted(glob.glob(os.path.join(schema_dir, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            crd = yaml.safe_load(f)
        if crd.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"{path}: not a CustomResourceDefinition")
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            api_kind = (f"{group}/{version['name']}", kind)
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            make_strict(schema)
            if api_kind in OPERATOR_RULES:
                apply_operator_rules(api_kind, schema)
            if object_meta is not None:
                schema["properties"]["metadata"] = object_meta
            jsonschema.Draft4Validator.check_schema(schema)
            registry[api_kind] = jsonschema.Draft4Validator(schema)
    return registry


# ---------------------------------------------------------------------------------------------
# Validation

def name_of(doc):
    meta = doc.get("metadata")
    return meta.get("name") if isinstance(meta, dict) else None


def describe(doc):
    if not isinstance(doc, dict):
        return type(doc).__name__
    return f"{doc.get('kind', '?')} {name_of(doc) or '?'}"


def schema_errors(registry, doc):
    """(json path, message) for each way doc violates its schema."""
    if not isinstance(doc, dict):
        return [("$", f"a document must be a mapping, not {type(doc).__name__}")]
    api_kind = (doc.get("apiVersion"), doc.get("kind"))
    if api_kind not in registry:
        known = ", ".join(f"{a} {k}" for a, k in sorted(registry))
        return [("$", f"no schema for apiVersion {api_kind[0]!r} kind {api_kind[1]!r} "
                      f"(known: {known})")]
    out = []
    for error in registry[api_kind].iter_errors(doc):
        parts = list(error.absolute_path)
        if (error.validator == "additionalProperties" and error.validator_value is False
                and isinstance(error.instance, dict)):
            allowed = error.schema.get("properties", {})
            known = ", ".join(sorted(allowed))
            for key in sorted(k for k in error.instance if k not in allowed):
                out.append((json_path(parts + [key]),
                            f"unknown field {key!r} (the schema allows: {known})"))
            continue
        message = " ".join(error.message.split())
        out.append((json_path(parts), message if len(message) <= 240 else message[:237] + "..."))
    return sorted(out)


def env_of(container):
    return {e.get("name"): e for e in container.get("env") or [] if isinstance(e, dict)}


def runs_cohort_launch(container):
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    return any(a in ("cohort", "/opt/cohort/bin/cohort") and argv[i + 1:i + 2] == ["launch"]
               for i, a in enumerate(argv))


def runs_mpirun(container):
    return os.path.basename(str((container.get("command") or [""])[0])) == "mpirun"


def contract_errors(doc, docs):
    """cohort's own rules for its manifests, for a document that passed its schema."""
    out, kind, spec = [], doc.get("kind"), doc.get("spec") or {}

    def pod_templates():
        if kind == "Job":
            yield ["spec", "template"], spec.get("template") or {}
        for field in ("pytorchReplicaSpecs", "mpiReplicaSpecs"):
            for rtype, rspec in (spec.get(field) or {}).items():
                yield ["spec", field, rtype, "template"], rspec.get("template") or {}

    for path, template in pod_templates():
        pod = template.get("spec") or {}
        for i, c in enumerate(pod.get("containers") or []):
            cpath = path + ["spec", "containers", i]
            env = env_of(c)
            launches = runs_cohort_launch(c)
            if (launches or runs_mpirun(c)) and not (
                    env.get("COHORT_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")):
                out.append((json_path(cpath + ["env"]),
                            "COHORT_TOKEN must come from a Secret (valueFrom.secretKeyRef)"))
            if kind == "Job" and launches:
                out += indexed_job_errors(doc, docs, template, cpath, env)
        if kind == "PyTorchJob" and not any(c.get("name") == "pytorch"
                                            for c in pod.get("containers") or []):
            out.append((json_path(path + ["spec", "containers"]),
                        "the training operator needs a container named 'pytorch'"))
        if kind == "PyTorchJob" and path[2] == "Master":
            replicas = spec["pytorchReplicaSpecs"]["Master"].get("replicas", 1)
            if replicas != 1:
                out.append((json_path(path[:3] + ["replicas"]), "Master must have 1 replica"))
    if kind == "MPIJob":
        out += mpi_job_errors(spec)
    return out


def indexed_job_errors(job, docs, template, cpath, env):
    out, spec = [], job["spec"]
    name = name_of(job)
    pod = template.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        out.append(("$.spec.completionMode", "cohort needs an Indexed Job (JOB_COMPLETION_INDEX)"))
    nnodes = env.get("COHORT_NNODES", {}).get("value")
    most = nnodes.split(":")[-1] if nnodes else None  # "MIN:MAX": the Job runs MAX pods
    if nnodes is None or not str(spec.get("completions")) == str(spec.get("parallelism")) == most:
        out.append((json_path(cpath + ["env"]), f"COHORT_NNODES ({nnodes}) must equal completions "
                    f"({spec.get('completions')}) and parallelism ({spec.get('parallelism')})"))
    subdomain = pod.get("subdomain")
    services = {name_of(d): d for d in docs
                if isinstance(d, dict) and d.get("kind") == "Service"}
    service = services.get(subdomain)
    if service is None:
        have = ", ".join(sorted(map(str, services))) or "none"
        out.append(("$.spec.template.spec.subdomain",
                    f"{subdomain!r} is not the name of a Service in this file (have: {have})"))
    else:
        sspec = service.get("spec") or {}
        if sspec.get("clusterIP") != "None":
            out.append(("$.spec.template.spec.subdomain",
                        f"Service {subdomain} must be headless (clusterIP: None)"))
        pod_labels = dict((template.get("metadata") or {}).get("labels") or {})
        pod_labels.update({"batch.kubernetes.io/job-name": name, "job-name": name})
        selector = sspec.get("selector") or {}
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            out.append(("$.spec.template.spec.subdomain", f"Service {subdomain}'s selector "
                        f"{selector} does not select this Job's pods"))
        if not any(p.get("port") == RDZV_PORT for p in sspec.get("ports") or []):
            out.append(("$.spec.template.spec.subdomain",
                        f"Service {subdomain} must expose port {RDZV_PORT}"))
    want = f"{name}-0.{subdomain}:{RDZV_PORT}"
    got = env.get("COHORT_RDZV_ENDPOINT", {}).get("value")
    if got != want:
        out.append((json_path(cpath + ["env"]),
                    f"COHORT_RDZV_ENDPOINT is {got!r}; node 0 is reachable as {want!r}"))
    return out


def mpi_job_errors(spec):
    launcher = spec["mpiReplicaSpecs"].get("Launcher") or {}
    workers = (spec["mpiReplicaSpecs"].get("Worker") or {}).get("replicas", 1)
    slots = spec.get("slotsPerWorker", 1)
    total = workers * slots
    for c in ((launcher.get("template") or {}).get("spec") or {}).get("containers") or []:
        argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if runs_mpirun(c) and "-np" in argv:
            np = (argv[argv.index("-np") + 1:] or ["nothing"])[0]
            if np != str(total):
                return [("$.spec.mpiReplicaSpecs.Launcher",
                         f"mpirun -np {np} but {workers} workers x {slots} slots = {total}")]
    return []


def validate_documents(registry, path, docs):
    """One error line per problem in the documents of one file."""
    lines = []
    for index, doc in enumerate(docs):
        errors = schema_errors(registry, doc)
        if not errors:
            errors = contract_errors(doc, docs)
        lines += [f"{path}: document {index} ({describe(doc)}): {p}: {m}" for p, m in errors]
    return lines


def load_manifests(manifest_dir):
    files = sorted(glob.glob(os.path.join(manifest_dir, "*.yaml")) +
                   glob.glob(os.path.join(manifest_dir, "*.yml")))
    loaded, errors = {}, []
    if not files:
        errors.append(f"{manifest_dir}: no *.yaml manifests found")
    for path in files:
        rel = os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path
        try:
            with open(path, encoding="utf-8") as f:
                docs = [d for d in load_yaml_documents(f) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            errors.append(f"{rel}: cannot load: {' '.join(str(e).split())}")
            continue
        if not docs:
            errors.append(f"{rel}: no documents")
        loaded[rel] = docs
    return loaded, errors


# ---------------------------------------------------------------------------------------------
# Negative cases: each mutates a copy of one manifest document and must be rejected.

def get_in(doc, path):
    for part in path:
        doc = doc[part]
    return doc


def rename(path, old, new):
    def mutate(doc):
        parent = get_in(doc, path)
        parent[new] = parent.pop(old)
    return mutate


def assign(path, value):
    def mutate(doc):
        parent = get_in(doc, path[:-1])
        parent[path[-1]]  # raises if absent: a case must change a field the manifest has
        parent[path[-1]] = value
    return mutate


def set_env(path, name, value):
    def mutate(doc):
        env = get_in(doc, path)
        [e for e in env if e["name"] == name][0]["value"] = value
    return mutate


def replace_with(new_doc):
    def mutate(doc):
        doc.clear()
        doc.update(copy.deepcopy(new_doc))
    return mutate


JOB_C0 = ["spec", "template", "spec", "containers", 0]
PT_MASTER_C0 = ["spec", "pytorchReplicaSpecs", "Master", "template", "spec", "containers", 0]
MPI_WORKER_C0 = ["spec", "mpiReplicaSpecs", "Worker", "template", "spec", "containers", 0]

# (kind of the document to mutate, what, mutation, text the error line must contain)
NEGATIVE_CASES = [
    ("Service", "misspelt field spec.clusterIp", rename(["spec"], "clusterIP", "clusterIp"),
     "$.spec.clusterIp: unknown field"),
    ("Service", "port as a string", assign(["spec", "ports", 0, "port"], "29500"),
     "$.spec.ports[0].port: '29500' is not of type 'integer'"),
    ("Job", "misspelt field spec.completionsMode",
     rename(["spec"], "completionMode", "completionsMode"),
     "$.spec.completionsMode: unknown field"),
    ("Job", "completions as a string", assign(["spec", "completions"], "2"),
     "$.spec.completions: '2' is not of type 'integer'"),
    ("Job", "env value as a number", set_env(JOB_C0 + ["env"], "COHORT_NNODES", 2),
     ".value: 2 is not of type 'string'"),
    ("Job", "COHORT_RDZV_ENDPOINT naming another Service",
     set_env(JOB_C0 + ["env"], "COHORT_RDZV_ENDPOINT", "fmnist-indexed-0.other:29500"),
     "COHORT_RDZV_ENDPOINT is 'fmnist-indexed-0.other:29500'"),
    ("PyTorchJob", "misspelt field spec.nProcPerNode (elasticPolicy's spelling)",
     rename(["spec"], "nprocPerNode", "nProcPerNode"), "$.spec.nProcPerNode: unknown field"),
    ("PyTorchJob", "nprocPerNode as an integer", assign(["spec", "nprocPerNode"], 4),
     "$.spec.nprocPerNode: 4 is not of type 'string'"),
    ("PyTorchJob", "misspelt field deep in the pod template (containers[0].commands)",
     rename(PT_MASTER_C0, "command", "commands"),
     "$.spec.pytorchReplicaSpecs.Master.template.spec.containers[0].commands: unknown field"),
    ("PyTorchJob", "misspelt replica type Workers",
     rename(["spec", "pytorchReplicaSpecs"], "Worker", "Workers"),
     "$.spec.pytorchReplicaSpecs.Workers: unknown field"),
    ("PyTorchJob", "container not named pytorch", assign(PT_MASTER_C0 + ["name"], "main"),
     "needs a container named 'pytorch'"),
    ("MPIJob", "misspelt field spec.slotPerWorker",
     rename(["spec"], "slotsPerWorker", "slotPerWorker"), "$.spec.slotPerWorker: unknown field"),
    ("MPIJob", "slotsPerWorker as a string", assign(["spec", "slotsPerWorker"], "4"),
     "$.spec.slotsPerWorker: '4' is not of type 'integer'"),
    ("MPIJob", "misspelt field deep in the pod template (containers[0].resource)",
     rename(MPI_WORKER_C0, "resources", "resource"),
     "$.spec.mpiReplicaSpecs.Worker.template.spec.containers[0].resource: unknown field"),
    ("MPIJob", "cleanPodPolicy not one of None/Running/All",
     assign(["spec", "runPolicy", "cleanPodPolicy"], "running"),
     "$.spec.runPolicy.cleanPodPolicy: 'running' is not one of"),
    ("MPIJob", "misspelt field in metadata (ObjectMeta)", rename(["metadata"], "labels", "label"),
     "$.metadata.label: unknown field"),
    ("MPIJob", "slots x workers != mpirun -np", assign(["spec", "slotsPerWorker"], 2),
     "mpirun -np 8 but 2 workers x 2 slots = 4"),
    ("Service", "a kind without a schema (ConfigMap)",
     replace_with({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cohort"},
                   "data": {"a": "x"}}),
     "no schema for apiVersion 'v1' kind 'ConfigMap'"),
    ("Service", "a Secret with a misspelt field (stringdata)",
     replace_with({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cohort-token"},
                   "type": "Opaque", "stringdata": {"token": "x"}}),
     "$.stringdata: unknown field"),
]


def run_negative_cases(registry, manifests):
    """Returns (number rejected as expected, failure lines)."""
    rejected, failures = 0, []
    for kind, what, mutate, expect in NEGATIVE_CASES:
        target = next(((path, i) for path, docs in manifests.items() for i, d in enumerate(docs)
                       if isinstance(d, dict) and d.get("kind") == kind), None)
        if target is None:
            failures.append(f"negative case '{what}': no {kind} document in the manifests")
            continue
        path, index = target
        docs = copy.deepcopy(manifests[path])
        try:
            mutate(docs[index])
        except (KeyError, IndexError, TypeError) as e:
            failures.append(f"negative case '{what}': {path} document {index} has no field to "
                            f"mutate ({type(e).__name__}: {e})")
            continue
        lines = validate_documents(registry, path, docs)
        if any(expect in line for line in lines):
            rejected += 1
        else:
            failures.append(f"negative case '{what}' ({path} document {index}) was not rejected as "
                            f"expected (wanted {expect!r}); got: {lines or 'no errors'}")
    try:
        load_yaml_documents("a: 1\na: 2\n")
        failures.append("negative case 'duplicate YAML key': was not rejected")
    except yaml.YAMLError:
        rejected += 1
    return rejected, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", default=os.path.join(REPO, "examples", "k8s"),
                        help="folder of *.yaml manifests (default: examples/k8s)")
    parser.add_argument("--schemas", default=os.path.join(HERE, "schemas"),
                        help="vendored schemas and their README.md (default: tests/k8s/schemas)")
    args = parser.parse_args()

    errors = check_schema_checksums(args.schemas)
    try:
        registry = load_schemas(args.schemas)
    except (OSError, ValueError, KeyError, yaml.YAMLError, jsonschema.SchemaError) as e:
        print(f"{args.schemas}: cannot load the schemas: {type(e).__name__}: "
              f"{' '.join(str(e).split())[:300]}")
        return 1
    manifests, load_errors = load_manifests(args.manifests)
    errors += load_errors
    count = 0
    for path, docs in manifests.items():
        errors += validate_documents(registry, path, docs)
        count += len(docs)
    rejected, failures = run_negative_cases(registry, manifests)
    errors += failures
    for line in errors:
        print(line)
    summary = (f"validated {count} documents in {len(manifests)} files; "
               f"{rejected} negative cases rejected")
    if errors:
        print(f"FAILED ({len(errors)} errors): {summary}")
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
