#!/usr/bin/env python3
"""Validate custom resources against the CRD schemas vendored in this directory.

kubernetes-validate checks the core kinds (Deployment, Service, RBAC, ...) but has no
schema for custom resources; this does for the Gateway API, Argo Rollouts and Flagger kinds
the manifests in config/kubernetes/ use, the way kubeconform does with CRD schemas
converted by openapi2jsonschema: each served version's openAPIV3Schema, made strict (an
object that lists its properties accepts no other ones, unless the CRD says it keeps
unknown fields), so a misspelt field fails instead of being dropped by the API server.

    validate.py FILE...    every document whose apiVersion/kind a vendored CRD defines is
                           validated; any other custom kind is an error (a core kind is
                           left to kubernetes-validate). Exit 1 on any failure.
"""
import copy
import glob
import os
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def strict(schema):
    """openapi2jsonschema --strict: objects with properties get additionalProperties false."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            # Every object carries apiVersion/kind/metadata at its root; CRD schemas list
            # them only sometimes.
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def load_schemas():
    schemas = {}
    for path in sorted(glob.glob(os.path.join(HERE, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                group, kind = spec["group"], spec["names"]["kind"]
                for version in spec["versions"]:
                    if not version.get("served"):
                        continue
                    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                    props = schema.setdefault("properties", {})
                    for field in ("apiVersion", "kind"):
                        props.setdefault(field, {"type": "string"})
                    props.setdefault("metadata", {"type": "object"})
                    schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def main(files):
    schemas = load_schemas()
    groups = {api.split("/")[0] for api, _ in schemas}
    failed = 0
    checked = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc:
                continue
            api, kind = doc.get("apiVersion", ""), doc["kind"]
            name = doc.get("metadata", {}).get("name", "?")
            schema = schemas.get((api, kind))
            if schema is None:
                if api.split("/")[0] in groups:
                    print(f"FAIL {path}: {kind} {name}: no vendored schema for {api} {kind}")
                    failed += 1
                continue
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
            )
            for error in errors:
                where = ".".join(str(p) for p in error.path) or "(root)"
                print(f"FAIL {path}: {kind} {name}: {where}: {error.message}")
            failed += len(errors)
            checked += 1
            if not errors:
                print(f"ok   {path}: {kind} {name} ({api})")
    print(f"{checked} custom resources checked against {len(schemas)} vendored schemas, {failed} failures")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
