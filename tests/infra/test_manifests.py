"""Every overlay renders with kustomize, and every resource it renders validates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import OVERLAYS, Doc, rendered
from tests.infra.resources import label
from tests.infra.validation import INFRA, crd_kinds, kubectl, render, validate_resource

# What rollway deploys; anything else showing up in a render is a mistake.
EXPECTED_KINDS = {
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("serving.knative.dev/v1", "Service"),
    ("sources.knative.dev/v1", "KafkaSource"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
}


def _problems(docs: tuple[Doc, ...] | list[Doc]) -> list[str]:
    return [problem for doc in docs for problem in validate_resource(doc)]


def test_kubectl_is_the_wheels() -> None:
    path = kubectl()
    assert path.is_file(), path


def test_overlay_renders_and_validates(overlay: str, docs: tuple[Doc, ...]) -> None:
    assert docs, f"{overlay} rendered nothing"
    assert _problems(docs) == []


def test_overlay_renders_only_expected_kinds(docs: tuple[Doc, ...]) -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert kinds == EXPECTED_KINDS
    # The custom resources go through the CRD schemas, not a lenient fallback.
    assert {
        ("serving.knative.dev/v1", "Service"),
        ("sources.knative.dev/v1", "KafkaSource"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
    } <= crd_kinds()


def test_overlay_names_are_unique(docs: tuple[Doc, ...]) -> None:
    keys = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))


def test_overlay_puts_everything_in_its_namespace(overlay: str, docs: tuple[Doc, ...]) -> None:
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert len(namespaces) == 1 and None not in namespaces, namespaces


def test_overlays_use_different_namespaces() -> None:
    namespaces = {rendered(o)[0]["metadata"]["namespace"] for o in OVERLAYS}
    assert len(namespaces) == len(OVERLAYS)


def test_secret_templates_render_and_validate() -> None:
    docs = render(INFRA / "secrets")
    assert {d["kind"] for d in docs} == {"Secret"}
    assert _problems(docs) == []


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def test_optional_components_render_and_validate(tmp_path: Path) -> None:
    """An overlay opting in to instance creation and Kafka SASL still validates."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "rollway-test",
                "resources": [_relative(INFRA / "base", tmp_path)],
                "components": [
                    _relative(INFRA / "components" / name, tmp_path)
                    for name in ("minio", "instance-creation", "kafka-sasl")
                ],
            }
        )
    )
    docs = render(tmp_path)
    assert _problems(docs) == []
    create = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-create")]
    assert [rule["verbs"] for d in create for rule in d["rules"]] == [["create"]]
    sources = [d for d in docs if d["kind"] == "KafkaSource"]
    assert len(sources) == 2  # the loader's and the rollout's
    for source in sources:
        assert source["spec"]["net"]["sasl"]["enable"] is True, label(source)
        assert source["spec"]["net"]["tls"]["enable"] is True, label(source)


def _kustomization(directory: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return loaded


def test_every_manifest_file_is_used() -> None:
    """A resource file that no kustomization lists would silently never deploy."""
    unused = []
    for path in sorted(INFRA.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        kustomization = _kustomization(path.parent)
        listed = set(kustomization.get("resources", []))
        listed |= {p["path"] for p in kustomization.get("patches", []) if "path" in p}
        if path.name not in listed:
            unused.append(str(path.relative_to(INFRA)))
    assert unused == []


@pytest.mark.parametrize(
    "path", sorted(INFRA.rglob("*.yaml")), ids=lambda p: str(p.relative_to(INFRA))
)
def test_yaml_files_parse_without_duplicate_keys(path: Path) -> None:
    """PyYAML keeps the last of two equal keys; kubectl rejects them. Catch them here."""

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(key) for key, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"{path}:{node.start_mark.line + 1}: duplicate keys {duplicates}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    assert list(yaml.load_all(path.read_text(), Loader=Strict))


def test_resource_labels_are_set(docs: tuple[Doc, ...]) -> None:
    missing = [
        label(d)
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "rollway"
    ]
    assert missing == []
