"""The rollout function's deployment: its Knative Service, its KafkaSource on the
assignments topic, and who owns the serving Services once it runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from functions import settings
from functions.rollout import apply
from functions.rollout.settings import FunctionLogSettings, RolloutSettings, config_from_env
from tests.infra.conftest import Doc
from tests.infra.resources import env_map, find, knative_services, label, of_kind
from tests.infra.validation import INFRA, validate_resource

KSVC = "serving.knative.dev/v1"
ROLLOUT = "rollway-rollout"
SOURCE = "rollway-model-assignments"
SERVING = ("models-default", "models-default-rest")
# The label that marks a Service as the rollout's after the first apply, and the
# selector that infra/README.md tells every later `kubectl apply -k` to use.
OWNER_LABEL = ("app.kubernetes.io/managed-by", "rollway-rollout")
LATER_APPLY_SELECTOR = "app.kubernetes.io/managed-by!=rollway-rollout"
# Variables the function reads: its settings classes' (functions/rollout/settings.py).
KNOWN_ENV = {
    *settings.variables(RolloutSettings).values(),
    *settings.variables(FunctionLogSettings).values(),
}


def _rollout(docs: tuple[Doc, ...]) -> Doc:
    return find(docs, "Service", ROLLOUT, KSVC)


def _container(service: Doc) -> Doc:
    found: Doc = service["spec"]["template"]["spec"]["containers"][0]
    return found


def _iso_seconds(text: str) -> int:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", text)
    assert match and text != "PT", f"not an ISO 8601 duration: {text!r}"
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _rollout_env(docs: tuple[Doc, ...]) -> dict[str, str]:
    """The rollout container's variables: literal values only (nothing secret)."""
    env: dict[str, str] = {}
    for name, entry in env_map(_container(_rollout(docs))).items():
        assert "value" in entry, f"{name} is not a literal value"
        env[name] = entry["value"]
    return env


@pytest.fixture
def in_the_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Makes functions.rollout see a pod's ServiceAccount mount in ``namespace``."""

    def enter(namespace: str) -> None:
        mount = tmp_path / "namespace"
        mount.write_text(namespace)
        monkeypatch.setattr(apply, "SERVICE_ACCOUNT_NAMESPACE", mount)

    return enter


def _selected(doc: Doc, selector: str) -> bool:
    """A label selector of `key!=value` terms, as kubectl evaluates it."""
    labels = doc["metadata"].get("labels", {})
    for term in selector.split(","):
        key, _, value = term.partition("!=")
        assert value, f"only != terms here: {term}"
        if labels.get(key) == value:
            return False
    return True


def test_rollout_resources_render_and_validate(docs: tuple[Doc, ...]) -> None:
    for doc in (_rollout(docs), find(docs, "KafkaSource", SOURCE)):
        assert validate_resource(doc) == [], label(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rollway"


def test_rollout_service_runs_the_function_as_the_rollout_account(docs: tuple[Doc, ...]) -> None:
    service = _rollout(docs)
    spec = service["spec"]["template"]["spec"]
    container = _container(service)
    assert container["command"] == ["python", "-m", "functions.rollout_function"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    # The rollout ServiceAccount of base/rbac.yaml, the one the Role is bound to.
    assert spec["serviceAccountName"] == ROLLOUT
    account = find(docs, "ServiceAccount", ROLLOUT)
    assert account.get("automountServiceAccountToken", True) is True  # it needs its token
    binding = find(docs, "RoleBinding", ROLLOUT)
    assert [s["name"] for s in binding["subjects"]] == [ROLLOUT]
    # Only the KafkaSource calls it.
    assert service["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"


def test_rollout_runs_the_loader_image(docs: tuple[Doc, ...]) -> None:
    """One image (infra/images/loader.Containerfile) for both functions."""
    loader = find(docs, "Service", "rollway-loader", KSVC)
    image = _container(_rollout(docs))["image"]
    assert image == _container(loader)["image"]
    assert "/rollway/loader" in image


def test_rollout_probes_are_func_pythons_health_routes(docs: tuple[Doc, ...]) -> None:
    container = _container(_rollout(docs))
    port = container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/readiness", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/liveness", "port": port}


def test_rollout_is_one_warm_replica(docs: tuple[Doc, ...]) -> None:
    notes = _rollout(docs)["spec"]["template"]["metadata"]["annotations"]
    # min-scale 1: no cold start before a rollout; max-scale 1: one writer of Service specs.
    for key in ("min-scale", "max-scale", "initial-scale"):
        assert notes[f"autoscaling.knative.dev/{key}"] == "1", key


def test_rollout_env_is_a_valid_rollout_configuration(
    docs: tuple[Doc, ...], in_the_pod: Callable[[str], None]
) -> None:
    env = _rollout_env(docs)
    unknown = {name for name in env if name.startswith("ROLLWAY_")} - KNOWN_ENV
    assert unknown == set(), "the rollout function reads no such variable"
    # The function's own parse, as at its start in the pod (a bad value would
    # crash-loop it). ROLLWAY_NAMESPACE is unset: the pod's own namespace.
    namespace = _rollout(docs)["metadata"]["namespace"]
    in_the_pod(namespace)
    config = config_from_env(env)
    assert config.namespace == namespace
    assert config.create is False  # creation is opt-in (components/instance-creation)
    # The example model is mapped to the Services that serve it.
    served = {
        name: env_map(_container(find(docs, "Service", name, KSVC)))["ROLLWAY_MODELS"]["value"]
        for name in SERVING
    }
    assert set(served.values()) == {"mnist"}
    assert dict(config.services) == {"mnist": SERVING}


def test_rollout_source_is_ordered_and_targets_the_rollout(docs: tuple[Doc, ...]) -> None:
    source = find(docs, "KafkaSource", SOURCE)
    spec = source["spec"]
    assert spec["topics"] == ["model-assignments"]
    assert source["metadata"]["annotations"]["kafka.eventing.knative.dev/delivery.order"] == (
        "ordered"
    )
    assert spec.get("ordering", "ordered") == "ordered"
    assert spec["sink"] == {"ref": {"apiVersion": KSVC, "kind": "Service", "name": ROLLOUT}}
    assert spec["initialOffset"] == "earliest"  # a new group rolls out the newest generations
    settings = find(docs, "ConfigMap", "rollway-settings")["data"]
    assert spec["bootstrapServers"] == [settings["kafka-bootstrap-servers"]]


def test_rollout_source_has_its_own_consumer_group(docs: tuple[Doc, ...]) -> None:
    groups = [d["spec"]["consumerGroup"] for d in of_kind(docs, "KafkaSource")]
    assert len(groups) == len(set(groups)) == 2
    assert find(docs, "KafkaSource", SOURCE)["spec"]["consumerGroup"] == ROLLOUT


def test_rollout_source_retries_with_exponential_backoff(docs: tuple[Doc, ...]) -> None:
    delivery = find(docs, "KafkaSource", SOURCE)["spec"]["delivery"]
    assert delivery["backoffPolicy"] == "exponential"
    assert delivery["retry"] >= 3
    delay = _iso_seconds(delivery["backoffDelay"])
    total = sum(delay * 2**attempt for attempt in range(delivery["retry"]))
    # Long enough to outlast an API server restart, short enough not to hold
    # the (single, ordered) partition for long.
    assert 60 <= total <= 30 * 60, total
    # The dispatcher waits as long as Knative lets a request run.
    timeout = _rollout(docs)["spec"]["template"]["spec"]["timeoutSeconds"]
    assert _iso_seconds(delivery["timeout"]) == timeout


def test_no_knative_service_needs_the_fieldref_feature(docs: tuple[Doc, ...]) -> None:
    """Knative refuses the downward API in env unless kubernetes.podspec-fieldref
    is on (off by default); the rollout reads its namespace from its ServiceAccount."""
    for service in knative_services(docs):
        for name, entry in env_map(_container(service)).items():
            source = entry.get("valueFrom", {})
            assert not {"fieldRef", "resourceFieldRef"} & set(source), f"{label(service)}: {name}"


def test_serving_services_are_owned_by_the_rollout(
    docs: tuple[Doc, ...], in_the_pod: Callable[[str], None]
) -> None:
    """The later-apply selector leaves out exactly the Services the rollout manages."""
    in_the_pod(_rollout(docs)["metadata"]["namespace"])
    services = config_from_env(_rollout_env(docs)).services
    mapped = {name for names in services.values() for name in names}
    key, value = OWNER_LABEL
    owned = {
        s["metadata"]["name"]
        for s in knative_services(docs)
        if s["metadata"].get("labels", {}).get(key) == value
    }
    assert owned == mapped == set(SERVING)
    left_out = {label(d) for d in docs if not _selected(d, LATER_APPLY_SELECTOR)}
    assert left_out == {f"Service/{name}" for name in SERVING}
    # Everything else, the rollout's own resources included, is still applied.
    assert _selected(_rollout(docs), LATER_APPLY_SELECTOR)


def test_readme_documents_the_later_apply_selector() -> None:
    readme = (INFRA / "README.md").read_text()
    assert f"-l '{LATER_APPLY_SELECTOR}'" in readme
    assert "rollway rollout status mnist" in readme
    assert "rollway rollout rollback mnist" in readme
