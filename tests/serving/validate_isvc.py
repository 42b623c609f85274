#!/usr/bin/env python3
"""Validates KServe InferenceService YAML documents offline, strictly.

validate_isvc.py SCHEMAS_DIR FILE...: each document of each FILE must be a
serving.kserve.io/v1beta1 InferenceService valid against the v1beta1 openAPIV3Schema of
SCHEMAS_DIR/serving.kserve.io_inferenceservices.yaml (tests/k8s/schemas, vendored from ../shared/schemas), made strict as ../shared/schemas/README.md
says (`additionalProperties: false` on every object with `properties` and no
x-kubernetes-preserve-unknown-fields), its metadata against ObjectMeta of job-batch-v1.json.
Prints one line per error and exits 1 when there is any. Needs PyYAML and jsonschema.
"""
import copy
import sys

import jsonschema
import json
import os
import yaml


def strict(schema):
    if isinstance(schema, dict):
        if ("properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in schema):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def load_schemas(folder):
    with open(os.path.join(folder, "serving.kserve.io_inferenceservices.yaml")) as f:
        crd = yaml.safe_load(f)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    isvc = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    with open(os.path.join(folder, "job-batch-v1.json")) as f:
        meta = json.load(f)["properties"]["metadata"]
    return isvc, meta


def main():
    if len(sys.argv) < 3:
        print("usage: validate_isvc.py SCHEMAS_DIR FILE...", file=sys.stderr)
        return 2
    isvc, meta = load_schemas(sys.argv[1])
    errors = 0
    for path in sys.argv[2:]:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        if not docs:
            print(f"{path}: no document")
            errors += 1
        for i, doc in enumerate(docs):
            if doc.get("apiVersion") != "serving.kserve.io/v1beta1" or doc.get("kind") != "InferenceService":
                print(f"{path}[{i}]: not a serving.kserve.io/v1beta1 InferenceService")
                errors += 1
                continue
            for schema, value, where in ((isvc, doc, ""), (meta, doc.get("metadata", {}), "metadata")):
                for e in jsonschema.Draft7Validator(schema).iter_errors(value):
                    at = ".".join(str(p) for p in [where, *e.absolute_path] if p != "")
                    print(f"{path}[{i}]: {at or '<root>'}: {e.message}")
                    errors += 1
    if errors == 0:
        print(f"valid: {len(sys.argv) - 2} file(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
