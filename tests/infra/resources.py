"""Small accessors over rendered resources, shared by the infra tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

Doc = dict[str, Any]

KNATIVE_SERVICE = ("serving.knative.dev/v1", "Service")
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def is_kind(doc: Doc, api_version: str, kind: str) -> bool:
    return doc.get("apiVersion") == api_version and doc.get("kind") == kind


def find(docs: Iterable[Doc], kind: str, name: str, api_version: str | None = None) -> Doc:
    for doc in docs:
        if (
            doc["kind"] == kind
            and doc["metadata"]["name"] == name
            and (api_version is None or doc["apiVersion"] == api_version)
        ):
            return doc
    raise AssertionError(f"no {kind}/{name} rendered")


def of_kind(docs: Iterable[Doc], kind: str, api_version: str | None = None) -> list[Doc]:
    return [
        d
        for d in docs
        if d["kind"] == kind and (api_version is None or d["apiVersion"] == api_version)
    ]


def knative_services(docs: Iterable[Doc]) -> list[Doc]:
    return [d for d in docs if is_kind(d, *KNATIVE_SERVICE)]


def pod_spec(doc: Doc) -> Doc | None:
    """The pod spec of a workload (Knative Service, Deployment, Job, ...), else None."""
    if is_kind(doc, *KNATIVE_SERVICE):
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    if doc["kind"] in POD_TEMPLATE_KINDS:
        spec = doc["spec"]["template"]["spec"]
        return spec
    if doc["kind"] == "Pod":
        spec = doc["spec"]
        return spec
    return None


def workloads(docs: Iterable[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(resource, pod spec) for every resource that runs containers."""
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            yield doc, spec


def containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_map(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def annotations(doc: Doc) -> dict[str, str]:
    """A Knative Service's revision template annotations."""
    found: dict[str, str] = doc["spec"]["template"]["metadata"].get("annotations", {})
    return found


def label(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"
