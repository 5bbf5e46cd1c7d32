"""validate_resource bites: broken resources give errors naming what is wrong."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.infra.conftest import Doc, rendered
from tests.infra.resources import find
from tests.infra.validation import structural_to_json_schema, validate_resource

Mutation = Callable[[Doc], None]


def _doc(kind: str, name: str) -> Doc:
    original = find(rendered("dev"), kind, name)
    assert validate_resource(original) == []
    return copy.deepcopy(original)


def _container(doc: Doc) -> Doc:
    container: Doc = doc["spec"]["template"]["spec"]["containers"][0]
    return container


def _set(path: list[str | int], value: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path: list[str | int]) -> Mutation:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


CONTAINER: list[str | int] = ["spec", "template", "spec", "containers", 0]

INVALID = [
    # Knative Service (CRD schema)
    pytest.param(
        "Service",
        "models-default",
        _set([*CONTAINER, "ports", 0, "containerPort"], "8500"),
        "containerPort: '8500' is not of type 'integer'",
        id="knative-port-as-string",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set([*CONTAINER, "readinesProbe"], {"grpc": {"port": 8500}}),
        "'readinesProbe' was unexpected",
        id="knative-unknown-container-field",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set([*CONTAINER, "readinessProbe", "grpc", "port"], "h2c"),
        "grpc/port: 'h2c' is not of type 'integer'",
        id="knative-grpc-probe-port-by-name",
    ),
    pytest.param(
        "Service",
        "models-default-rest",
        _set([*CONTAINER, "readinessProbe", "httpGet", "port"], 85.01),
        "httpGet/port",
        id="knative-int-or-string-port-as-float",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set(["spec", "template", "metadata", "annotations", "autoscaling.knative.dev/target"], 8),
        "is not of type 'string'",
        id="knative-annotation-not-a-string",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set([*CONTAINER, "resources", "limits", "cpu"], "two"),
        "resources/limits/cpu: 'two' does not match",
        id="knative-bad-quantity",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set(["spec", "template", "spec", "containerConcurrency"], "8"),
        "containerConcurrency",
        id="knative-concurrency-as-string",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set(["metadata", "lables"], {"a": "b"}),
        "/metadata: Additional properties are not allowed ('lables' was unexpected)",
        id="knative-objectmeta-typo",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set(["apiVersion"], "serving.knative.dev/v1alpha1"),
        "unknown kind",
        id="knative-unknown-version",
    ),
    # KafkaSource (CRD schema)
    pytest.param(
        "KafkaSource",
        "rollway-model-publish",
        _delete(["spec", "topics"]),
        "'topics' is a required property",
        id="kafkasource-no-topics",
    ),
    pytest.param(
        "KafkaSource",
        "rollway-model-publish",
        _set(["spec", "delivery", "retry"], "8"),
        "retry: '8' is not of type 'integer'",
        id="kafkasource-retry-as-string",
    ),
    pytest.param(
        "KafkaSource",
        "rollway-model-publish",
        _delete(["spec", "delivery", "deadLetterSink", "ref", "kind"]),
        "'kind' is a required property",
        id="kafkasource-sink-ref-without-kind",
    ),
    pytest.param(
        "KafkaSource",
        "rollway-model-publish",
        _set(["spec", "topic"], "model-publish"),
        "'topic' was unexpected",
        id="kafkasource-unknown-field",
    ),
    pytest.param(
        "KafkaSource",
        "rollway-model-assignments",
        _set(["metadata", "annotations", "kafka.eventing.knative.dev/delivery.order"], True),
        "is not of type 'string'",
        id="kafkasource-annotation-not-a-string",
    ),
    pytest.param(
        "Service",
        "rollway-rollout",
        _set([*CONTAINER, "command"], "python -m functions.rollout_function"),
        "command: 'python -m functions.rollout_function' is not of type 'array'",
        id="knative-command-as-string",
    ),
    # Strimzi KafkaTopic (CRD schema)
    pytest.param(
        "KafkaTopic",
        "model-assignments",
        _set(["spec", "partitions"], "1"),
        "partitions: '1' is not of type 'integer'",
        id="kafkatopic-partitions-as-string",
    ),
    pytest.param(
        "KafkaTopic",
        "model-assignments",
        _set(["spec", "replicas"], 0),
        "replicas: 0 is less than the minimum of 1",
        id="kafkatopic-zero-replicas",
    ),
    pytest.param(
        "KafkaTopic",
        "model-assignments",
        _delete(["spec"]),
        "'spec' is a required property",
        id="kafkatopic-no-spec",
    ),
    # Built-in kinds (Kubernetes schemas, strict)
    pytest.param(
        "Deployment",
        "rollway-minio",
        _set(["spec", "replica"], 1),
        "'replica' was unexpected",
        id="deployment-unknown-field",
    ),
    pytest.param(
        "Deployment",
        "rollway-minio",
        _set(["spec", "replicas"], "1"),
        "replicas: '1' is not of type 'integer'",
        id="deployment-replicas-as-string",
    ),
    pytest.param(
        "Deployment",
        "rollway-minio",
        _delete([*CONTAINER, "name"]),
        "'name' is a required property",
        id="deployment-container-without-name",
    ),
    pytest.param(
        "Role",
        "rollway-rollout",
        _set(["rules", 0, "verbs"], "get"),
        "verbs: 'get' is not of type 'array'",
        id="role-verbs-as-string",
    ),
    pytest.param(
        "Job",
        "rollway-minio-setup",
        _set(["spec", "backoffLimit"], "6"),
        "backoffLimit: '6' is not of type 'integer'",
        id="job-backoff-as-string",
    ),
    pytest.param(
        "KafkaSource",
        "rollway-model-publish",
        _set(["kind"], "KafkaSink"),
        "unknown kind KafkaSink",
        id="unknown-kind",
    ),
    pytest.param(
        "Deployment",
        "rollway-minio",
        _set(["apiVersion"], "apps.example.com/v1"),
        "unknown kind Deployment of apps.example.com/v1",
        id="built-in-kind-of-another-group",
    ),
    pytest.param(
        "ConfigMap",
        "rollway-settings",
        _delete(["metadata", "name"]),
        "metadata.name is required",
        id="no-name",
    ),
]


@pytest.mark.parametrize(("kind", "name", "mutate", "expected"), INVALID)
def test_invalid_resources_are_rejected(
    kind: str, name: str, mutate: Mutation, expected: str
) -> None:
    doc = _doc(kind, name)
    mutate(doc)
    problems = validate_resource(doc)
    assert problems, "validation accepted a broken resource"
    assert any(expected in p for p in problems), problems


VALID = [
    pytest.param(
        "KafkaTopic",
        "model-publish",
        _set(["spec", "config", "any.broker.setting"], {"nested": [1, "x"]}),
        id="kafkatopic-config-preserves-unknown-fields",
    ),
    pytest.param(
        "Service",
        "models-default-rest",
        _set([*CONTAINER, "readinessProbe", "httpGet", "port"], "http1"),
        id="knative-int-or-string-port-by-name",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set(["spec", "template", "spec", "volumes", 0, "emptyDir", "medium"], "Memory"),
        id="knative-emptydir-preserves-unknown-fields",
    ),
    pytest.param(
        "Service",
        "models-default",
        _set(["spec", "template", "metadata", "labels", "extra"], "x"),
        id="knative-template-labels",
    ),
]


@pytest.mark.parametrize(("kind", "name", "mutate"), VALID)
def test_valid_variations_are_accepted(kind: str, name: str, mutate: Mutation) -> None:
    doc = _doc(kind, name)
    mutate(doc)
    assert validate_resource(doc) == []


def test_all_problems_are_reported_not_just_the_first() -> None:
    doc = _doc("KafkaTopic", "model-publish")
    doc["spec"]["partitions"] = "3"
    doc["spec"]["replicas"] = "1"
    assert len(validate_resource(doc)) == 2


def test_non_mappings_and_missing_kind_are_errors() -> None:
    assert validate_resource([])  # type: ignore[arg-type]
    assert validate_resource({"metadata": {"name": "x"}})


def test_structural_schema_conversion() -> None:
    schema = structural_to_json_schema(
        {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "maybe": {"type": "string", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            },
        }
    )
    assert schema["additionalProperties"] is False
    assert schema["properties"]["port"]["type"] == ["integer", "string"]
    assert schema["properties"]["maybe"]["type"] == ["string", "null"]
    assert "additionalProperties" not in schema["properties"]["free"]
    assert schema["properties"]["ratio"] == {"type": "number", "exclusiveMinimum": 0}


def test_a_minimal_generated_knative_service_validates() -> None:
    """The shape the rollout function generates: validate_resource takes plain dicts."""
    service: Doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "models-new", "namespace": "rollway"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
                "spec": {
                    "containers": [
                        {
                            "image": "registry.example.com/rollway/serving:0.1.0",
                            "env": [{"name": "ROLLWAY_PIN_GENERATION", "value": "7"}],
                        }
                    ]
                },
            },
            "traffic": [
                {"revisionName": "models-new-00001", "percent": 90},
                {"latestRevision": True, "percent": 10, "tag": "canary"},
            ],
        },
    }
    assert validate_resource(service) == []
    service["spec"]["traffic"][0]["percent"] = "90"
    assert validate_resource(service) == [
        "Service/models-new (CRD schema): /spec/traffic/0/percent: '90' is not of type 'integer'"
    ]
