"""Policies the rendered overlays must keep: security, sizing and rollway's wiring."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from functions.serving.config_messages import MonitoringConfig
from functions.serving.flags import ServerOptions, build_parser
from tests.infra.conftest import Doc, rendered
from tests.infra.resources import (
    annotations,
    containers,
    env_map,
    find,
    knative_services,
    label,
    of_kind,
    workloads,
)
from tests.infra.validation import INFRA, render

SERVING = ("models-default", "models-default-rest")
ROLLOUT_RULES = [
    {"apiGroups": ["serving.knative.dev"], "resources": ["services"], "verbs": ["get", "patch"]}
]
# Env names that carry credentials: they must come from a Secret.
CREDENTIAL_ENV = re.compile(r"ACCESS_KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL|ROOT_USER|_KEY$")
# Literal values that look like credentials wherever they appear.
CREDENTIAL_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----")
# `rollway serve` replica flags (from the serving-from-assignments work); every
# other ROLLWAY_* variable of a serving container must be a TF Serving flag.
REPLICA_FLAGS = {
    "assignments",
    "models",
    "pin_generation",
    "follow",
    "cache_dir",
    "kafka_bootstrap_servers",
}
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _seconds(text: str) -> int:
    """A Go duration as Knative annotations take it ("900s", "10m", "1h30m")."""
    match = DURATION.match(text)
    assert match and text, f"not a duration: {text!r}"
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _iso_seconds(text: str) -> int:
    """An ISO 8601 duration as Knative delivery takes it ("PT2S", "PT10M")."""
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", text)
    assert match and text != "PT", f"not an ISO 8601 duration: {text!r}"
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", text)
    assert match, text
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def _container(doc: Doc) -> Doc:
    found: Doc = doc["spec"]["template"]["spec"]["containers"][0]
    return found


def _settings(docs: tuple[Doc, ...]) -> dict[str, str]:
    data: dict[str, str] = find(docs, "ConfigMap", "rollway-settings")["data"]
    return data


# --- security --------------------------------------------------------------------------


def test_every_container_has_requests_and_limits(docs: tuple[Doc, ...]) -> None:
    missing = []
    for doc, spec in workloads(docs):
        for container in containers(spec):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(bound, {}):
                        missing.append(f"{label(doc)}/{container['name']}: {bound}.{resource}")
    assert missing == []


def _cpu_milli(text: str) -> int:
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def test_requests_never_exceed_limits(docs: tuple[Doc, ...]) -> None:
    for doc, spec in workloads(docs):
        for container in containers(spec):
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            for resource, limit in limits.items():
                where = f"{label(doc)}/{container['name']}: {resource}"
                if resource == "cpu":
                    assert _cpu_milli(requests[resource]) <= _cpu_milli(limit), where
                else:
                    assert _quantity_bytes(requests[resource]) <= _quantity_bytes(limit), where


def test_every_container_runs_as_non_root(docs: tuple[Doc, ...]) -> None:
    offenders = []
    for doc, spec in workloads(docs):
        pod = spec.get("securityContext", {})
        for container in containers(spec):
            context = container.get("securityContext", {})
            non_root = context.get("runAsNonRoot", pod.get("runAsNonRoot"))
            user = context.get("runAsUser", pod.get("runAsUser"))
            if non_root is not True or user == 0:
                offenders.append(f"{label(doc)}/{container['name']}: not runAsNonRoot")
            if context.get("allowPrivilegeEscalation") is not False:
                offenders.append(f"{label(doc)}/{container['name']}: privilege escalation")
            if context.get("privileged"):
                offenders.append(f"{label(doc)}/{container['name']}: privileged")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                offenders.append(f"{label(doc)}/{container['name']}: capabilities not dropped")
    assert offenders == []


def test_credentials_come_only_from_secrets(docs: tuple[Doc, ...]) -> None:
    offenders = []
    for doc, spec in workloads(docs):
        for container in containers(spec):
            for name, entry in env_map(container).items():
                if CREDENTIAL_ENV.search(name) and "secretKeyRef" not in entry.get("valueFrom", {}):
                    offenders.append(f"{label(doc)}/{container['name']}: {name} not from a Secret")
    assert offenders == []


def test_no_literal_credentials_anywhere(docs: tuple[Doc, ...]) -> None:
    for doc in docs:
        assert not CREDENTIAL_VALUE.search(json.dumps(doc)), label(doc)


def test_overlays_contain_no_secrets(docs: tuple[Doc, ...]) -> None:
    """Secrets are created once from templates; re-applying must never overwrite them."""
    assert of_kind(docs, "Secret") == []


def test_secret_templates_hold_placeholders_only() -> None:
    for doc in render(INFRA / "secrets"):
        assert "data" not in doc, label(doc)
        assert doc["stringData"], label(doc)
        for key, value in doc["stringData"].items():
            assert value == "REPLACE_ME", f"{label(doc)}: {key}"


def test_secret_references_match_the_templates(docs: tuple[Doc, ...]) -> None:
    templates = {d["metadata"]["name"]: set(d["stringData"]) for d in render(INFRA / "secrets")}
    for doc, spec in workloads(docs):
        for container in containers(spec):
            for name, entry in env_map(container).items():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in templates.get(ref["name"], set()), (
                        f"{label(doc)}: {name} refers to {ref['name']}/{ref['key']},"
                        " which infra/secrets does not define"
                    )


def test_config_map_references_resolve(docs: tuple[Doc, ...]) -> None:
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    for doc, spec in workloads(docs):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, label(doc)
        for container in containers(spec):
            for name, entry in env_map(container).items():
                ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config_maps.get(ref["name"], {}), f"{label(doc)}: {name}"


def test_rollout_role_is_least_privilege(docs: tuple[Doc, ...]) -> None:
    role = find(docs, "Role", "rollway-rollout")
    assert role["rules"] == ROLLOUT_RULES
    binding = find(docs, "RoleBinding", "rollway-rollout")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "rollway-rollout",
    }
    namespace = role["metadata"]["namespace"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rollway-rollout", "namespace": namespace}
    ]


def test_no_cluster_wide_or_extra_grants(docs: tuple[Doc, ...]) -> None:
    assert of_kind(docs, "ClusterRole") == [] and of_kind(docs, "ClusterRoleBinding") == []
    # Creating Services is opt-in (components/instance-creation), never in an overlay as shipped.
    assert [d["metadata"]["name"] for d in of_kind(docs, "Role")] == ["rollway-rollout"]


def test_only_the_rollout_function_gets_an_api_token(docs: tuple[Doc, ...]) -> None:
    for account in of_kind(docs, "ServiceAccount"):
        if account["metadata"]["name"] != "rollway-rollout":
            assert account.get("automountServiceAccountToken") is False, label(account)
    for doc, spec in workloads(docs):
        if spec.get("serviceAccountName") is None:
            assert spec.get("automountServiceAccountToken") is False, label(doc)


# --- serving ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVING)
def test_serving_has_probes_on_its_one_port(docs: tuple[Doc, ...], name: str) -> None:
    container = _container(find(docs, "Service", name, "serving.knative.dev/v1"))
    (port,) = container["ports"]
    for probe in ("readinessProbe", "startupProbe"):
        assert probe in container, f"{name}: no {probe}"
        action = container[probe]
        if port["name"] == "h2c":
            # gRPC health (model-aware) on the gRPC port.
            assert action["grpc"]["port"] == port["containerPort"] == 8500
        else:
            assert port["name"] == "http1"
            assert action["httpGet"] == {"path": "/v1/ready", "port": 8501}
            assert port["containerPort"] == 8501


@pytest.mark.parametrize("name", SERVING)
def test_serving_flags_match_ports_and_mounts(docs: tuple[Doc, ...], name: str) -> None:
    service = find(docs, "Service", name, "serving.knative.dev/v1")
    container = _container(service)
    env = {k: v.get("value") for k, v in env_map(container).items()}
    assert env["ROLLWAY_PORT"] == "8500"
    assert env["ROLLWAY_REST_API_PORT"] == "8501"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in service["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[env["ROLLWAY_CACHE_DIR"]]]
    monitoring = env["ROLLWAY_MONITORING_CONFIG_FILE"]
    directory, _, key = monitoring.rpartition("/")
    config_map = find(docs, "ConfigMap", volumes[mounts[directory]]["configMap"]["name"])
    text_format.Parse(config_map["data"][key], MonitoringConfig())


def test_serving_env_are_rollway_serve_flags(docs: tuple[Doc, ...]) -> None:
    """Every ROLLWAY_* variable is a `rollway serve` flag, and its value parses."""
    parser = build_parser()
    known = {f.name for f in dataclasses.fields(ServerOptions)}
    for name in SERVING:
        container = _container(find(docs, "Service", name, "serving.knative.dev/v1"))
        for var, entry in env_map(container).items():
            if not var.startswith("ROLLWAY_"):
                continue
            flag = var.removeprefix("ROLLWAY_").lower()
            if flag in REPLICA_FLAGS and flag not in known:
                continue
            assert flag in known, f"{name}: {var} is no rollway serve flag"
            if "value" in entry and entry["value"] != "":
                parser.parse_args([f"--{flag}={entry['value']}"])


def test_grpc_and_rest_services_agree(docs: tuple[Doc, ...]) -> None:
    grpc, rest = (find(docs, "Service", n, "serving.knative.dev/v1") for n in SERVING)
    assert annotations(grpc) == annotations(rest)
    for key in ("env", "resources", "image", "securityContext", "volumeMounts"):
        assert _container(grpc)[key] == _container(rest)[key], key
    for key in ("volumes", "serviceAccountName", "timeoutSeconds"):
        assert grpc["spec"]["template"]["spec"][key] == rest["spec"]["template"]["spec"][key]


@pytest.mark.parametrize("name", SERVING)
def test_serving_progress_deadline_covers_the_startup_probe(
    docs: tuple[Doc, ...], name: str
) -> None:
    service = find(docs, "Service", name, "serving.knative.dev/v1")
    deadline = _seconds(annotations(service)["serving.knative.dev/progress-deadline"])
    probe = _container(service)["startupProbe"]
    window = probe["periodSeconds"] * probe["failureThreshold"]
    # The startup probe must be able to fail (and say why) before Knative gives up.
    assert window < deadline


def test_every_knative_service_has_a_progress_deadline(docs: tuple[Doc, ...]) -> None:
    for service in knative_services(docs):
        assert _seconds(annotations(service)["serving.knative.dev/progress-deadline"]) > 0


def test_autoscaling_annotations(overlay: str, docs: tuple[Doc, ...]) -> None:
    for service in knative_services(docs):
        notes = annotations(service)
        scale = {
            k: int(notes[f"autoscaling.knative.dev/{k}"])
            for k in ("min-scale", "initial-scale", "max-scale", "target")
        }
        retention = notes.get("autoscaling.knative.dev/scale-to-zero-pod-retention-period")
        if scale["min-scale"] == 0:
            assert retention is not None, f"{label(service)} scales to zero: how long to wait?"
        if retention is not None:
            _seconds(retention)
        assert scale["target"] >= 1
        assert scale["min-scale"] <= scale["max-scale"], label(service)
        assert 1 <= scale["initial-scale"] <= scale["max-scale"], label(service)
        if service["metadata"]["name"] in SERVING:
            if overlay == "dev":
                assert scale["min-scale"] == 0
            else:
                assert scale["min-scale"] >= 1
                assert scale["initial-scale"] == scale["min-scale"]


def test_prod_serving_is_bigger_than_dev() -> None:
    def memory(overlay: str) -> int:
        service = find(rendered(overlay), "Service", "models-default", "serving.knative.dev/v1")
        return _quantity_bytes(_container(service)["resources"]["requests"]["memory"])

    assert memory("prod") > memory("dev")


def test_cache_and_tmp_fit_the_ephemeral_storage(docs: tuple[Doc, ...]) -> None:
    for service in knative_services(docs):
        spec = service["spec"]["template"]["spec"]
        limit = _quantity_bytes(_container(service)["resources"]["limits"]["ephemeral-storage"])
        empty = sum(
            _quantity_bytes(v["emptyDir"]["sizeLimit"]) for v in spec["volumes"] if "emptyDir" in v
        )
        assert empty <= limit, label(service)


# --- loader and Kafka ------------------------------------------------------------------


def test_loader_service(docs: tuple[Doc, ...]) -> None:
    loader = find(docs, "Service", "rollway-loader", "serving.knative.dev/v1")
    container = _container(loader)
    assert container["command"] == ["python", "-m", "functions.loader_function"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    env = env_map(container)
    for name in (
        "ROLLWAY_STORE",
        "ROLLWAY_KAFKA_BOOTSTRAP_SERVERS",
        "ROLLWAY_MODEL_CONFIG",
        "ROLLWAY_SOURCE_ROOTS",
    ):
        assert name in env, name
    assert "readinessProbe" in container
    assert loader["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    # The loader's deliveries can take minutes; the KafkaSource must wait as long.
    source = find(docs, "KafkaSource", "rollway-model-publish")
    timeout = loader["spec"]["template"]["spec"]["timeoutSeconds"]
    assert _iso_seconds(source["spec"]["delivery"]["timeout"]) == timeout


def test_model_config_is_a_valid_model_server_config(docs: tuple[Doc, ...]) -> None:
    loader = find(docs, "Service", "rollway-loader", "serving.knative.dev/v1")
    path = env_map(_container(loader))["ROLLWAY_MODEL_CONFIG"]["value"]
    directory, _, key = path.rpartition("/")
    mounts = {m["mountPath"]: m["name"] for m in _container(loader)["volumeMounts"]}
    volumes = {v["name"]: v for v in loader["spec"]["template"]["spec"]["volumes"]}
    config_map = find(docs, "ConfigMap", volumes[mounts[directory]]["configMap"]["name"])
    # TF Serving's own message: the same parse `--model_config_file` gets.
    config = text_format.Parse(config_map["data"][key], model_server_config_pb2.ModelServerConfig())
    models = {m.name: m for m in config.model_config_list.config}
    serving = env_map(_container(find(docs, "Service", "models-default", "serving.knative.dev/v1")))
    assert set(serving["ROLLWAY_MODELS"]["value"].split(",")) <= set(models)
    store = env_map(_container(loader))["ROLLWAY_STORE"]["value"]
    for name, model in models.items():
        assert model.base_path == f"{store}/{name}"
        assert model.model_platform == "tensorflow"


def test_kafka_source(docs: tuple[Doc, ...]) -> None:
    source = find(docs, "KafkaSource", "rollway-model-publish")["spec"]
    assert source["topics"] == ["model-publish"]
    assert source["consumerGroup"]
    assert source["bootstrapServers"] == [_settings(docs)["kafka-bootstrap-servers"]]
    delivery = source["delivery"]
    assert delivery["backoffPolicy"] == "exponential"
    assert delivery["retry"] >= 1
    assert _iso_seconds(delivery["backoffDelay"]) >= 1
    services = {s["metadata"]["name"] for s in knative_services(docs)}
    for sink in (source["sink"], delivery["deadLetterSink"]):
        assert sink["ref"]["kind"] == "Service"
        assert sink["ref"]["name"] in services


def _topic(docs: tuple[Doc, ...], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, "KafkaTopic", name)["spec"]
    return spec


def test_assignments_topic_is_compacted_with_one_partition(docs: tuple[Doc, ...]) -> None:
    topic = _topic(docs, "model-assignments")
    assert topic["config"]["cleanup.policy"] == "compact"
    assert topic["partitions"] == 1


def test_topics(overlay: str, docs: tuple[Doc, ...]) -> None:
    topics = {d["metadata"]["name"] for d in of_kind(docs, "KafkaTopic")}
    assert topics == {"model-publish", "model-assignments", "model-dead-letter"}
    clusters = {d["metadata"]["labels"]["strimzi.io/cluster"] for d in of_kind(docs, "KafkaTopic")}
    assert len(clusters) == 1
    for name in topics:
        topic = _topic(docs, name)
        if overlay == "prod":
            assert topic["replicas"] >= 3
            assert topic["config"]["min.insync.replicas"] == topic["replicas"] - 1
        if topic["config"]["cleanup.policy"] == "delete":
            assert topic["config"]["retention.ms"] >= 24 * 3600 * 1000


def test_prod_publish_topic_has_more_partitions_than_dev() -> None:
    def partitions(overlay: str) -> int:
        count: int = _topic(rendered(overlay), "model-publish")["partitions"]
        return count

    assert partitions("prod") > partitions("dev")


def test_loader_replicas_cover_the_publish_partitions(docs: tuple[Doc, ...]) -> None:
    """Ordered delivery keeps one record in flight per partition; more is wasted."""
    loader = find(docs, "Service", "rollway-loader", "serving.knative.dev/v1")
    per_replica = loader["spec"]["template"]["spec"]["containerConcurrency"]
    max_scale = int(annotations(loader)["autoscaling.knative.dev/max-scale"])
    partitions = _topic(docs, "model-publish")["partitions"]
    assert max_scale * per_replica >= partitions
    assert (max_scale - 1) * per_replica < partitions


# --- MinIO -----------------------------------------------------------------------------


def test_minio_notifies_kafka_on_manifests_and_archive_digests(docs: tuple[Doc, ...]) -> None:
    minio = find(docs, "Deployment", "rollway-minio")
    env = env_map(_container(minio))
    targets = {
        m.group(1) for name in env if (m := re.fullmatch(r"MINIO_NOTIFY_KAFKA_ENABLE_(\w+)", name))
    }
    (target,) = targets
    assert env[f"MINIO_NOTIFY_KAFKA_ENABLE_{target}"]["value"] == "on"
    assert env[f"MINIO_NOTIFY_KAFKA_TOPIC_{target}"]["value"] == "model-publish"
    brokers = env[f"MINIO_NOTIFY_KAFKA_BROKERS_{target}"]["valueFrom"]["configMapKeyRef"]
    assert brokers == {"name": "rollway-settings", "key": "kafka-bootstrap-servers"}
    assert minio["spec"]["strategy"]["type"] == "Recreate"

    script = "\n".join(_container(find(docs, "Job", "rollway-minio-setup"))["args"])
    arn = f"arn:minio:sqs::{target}:kafka"
    assert re.search(
        rf"mc event add rollway/rollway-publish {arn} --event put --suffix rollway-manifest.json",
        script,
    )
    assert ".tar.gz.sha256" in script
    # The serving bucket must not notify: the loader's own writes would loop back.
    assert not re.search(r"mc event add \S*rollway-serving", script)


def test_minio_volume_is_small_in_dev_and_large_in_prod() -> None:
    def size(overlay: str) -> int:
        claim = find(rendered(overlay), "PersistentVolumeClaim", "rollway-minio")
        return _quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])

    assert size("dev") <= 10 * 2**30 < size("prod")


def test_settings_endpoint_names_the_minio_service(docs: tuple[Doc, ...]) -> None:
    endpoint = _settings(docs)["s3-endpoint"]
    service = find(docs, "Service", "rollway-minio", "v1")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "s3")
    assert endpoint == f"http://rollway-minio:{port}"
