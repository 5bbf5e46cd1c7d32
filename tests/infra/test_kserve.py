"""infra/kserve: rollway as a KServe ClusterServingRuntime, and example InferenceServices.

Offline, every resource validates against KServe's CRD schemas in
``../shared/schemas/kserve`` (``tests/infra/validation.py``), and the runtime
is held to what KServe does with it and to what ``rollway serve`` accepts:

- runtime selection as KServe's controller makes it
  (``pkg/apis/serving/v1beta1/predictor_model.go``: model format labels,
  ``autoSelect`` unless a runtime is named, ``protocolVersions``, the highest
  ``priority`` first), against stand-ins for KServe's own TensorFlow runtimes
  (``config/runtimes/kserve-tensorflow-serving.yaml``, ``kserve-tritonserver.yaml``);
- the container's args through rollway's own flag table and validation
  (``functions.serving.flags``), with ``{{.Name}}`` replaced as KServe does and
  an InferenceService's args appended as KServe appends them, so a renamed or
  refused flag fails here;
- ports, probes, image and security context against the Containerfile and
  the overlays' serving Services.

With ``KUBECONFIG`` set, a server-side dry run adds KServe's and Knative's
admission checks.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from functions.serving.flags import ServerOptions, parse_flags
from tests.infra.conftest import Doc
from tests.infra.test_images import parse
from tests.infra.validation import (
    INFRA,
    cluster_kubectl,
    crd_kinds,
    render,
    require_on_cluster,
    validate_resource,
)

KSERVE = INFRA / "kserve"
EXAMPLES = KSERVE / "examples"
RUNTIME_NAME = "rollway"
RUNTIME_KIND = ("serving.kserve.io/v1alpha1", "ClusterServingRuntime")
ISVC_KIND = ("serving.kserve.io/v1beta1", "InferenceService")

# KServe's constants: the predictor container's name, where the storage
# initializer puts the model, and the protocol an InferenceService gets when it
# names none (it then takes the lowest the runtime lists; v1 first).
KSERVE_CONTAINER = "kserve-container"
MODEL_MOUNT = "/mnt/models"
DEFAULT_PROTOCOL = "v1"
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# Where Knative (and KServe's raw Deployments) send HTTP when the container
# declares no port.
DEFAULT_HTTP_PORT = 8080

# The TensorFlow entries of KServe's built-in runtimes, which rollway's must
# outrank (or lose to deliberately) when an InferenceService names no runtime.
KSERVE_BUILTIN_RUNTIMES: dict[str, Doc] = {
    "kserve-tensorflow-serving": {
        "supportedModelFormats": [
            {"name": "tensorflow", "version": "1", "autoSelect": True, "priority": 2},
            {"name": "tensorflow", "version": "2", "autoSelect": True, "priority": 2},
        ],
        "protocolVersions": ["v1", "grpc-v1"],
    },
    "kserve-tritonserver": {
        "supportedModelFormats": [
            {"name": "tensorflow", "version": "1", "autoSelect": True, "priority": 1},
            {"name": "tensorflow", "version": "2", "autoSelect": True, "priority": 1},
        ],
        "protocolVersions": ["v2", "grpc-v2"],
    },
}


@functools.cache
def _rendered(directory: str) -> tuple[Doc, ...]:
    return tuple(render(KSERVE / directory))


def _runtime() -> Doc:
    found = [d for d in _rendered(".") if (d["apiVersion"], d["kind"]) == RUNTIME_KIND]
    assert [d["metadata"]["name"] for d in found] == [RUNTIME_NAME]
    return found[0]


def _container() -> Doc:
    containers: list[Doc] = _runtime()["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _inference_services() -> list[Doc]:
    return [d for d in _rendered("examples") if (d["apiVersion"], d["kind"]) == ISVC_KIND]


def _model(isvc: Doc) -> Doc:
    model: Doc = isvc["spec"]["predictor"]["model"]
    return model


def _base_serving_container(name: str = "serving-rest.yaml") -> Doc:
    service = yaml.safe_load((INFRA / "base" / name).read_text())
    container: Doc = service["spec"]["template"]["spec"]["containers"][0]
    return container


def _flag_name(arg: str) -> str:
    assert arg.startswith("--"), f"{arg!r} is not a --flag"
    return arg[2:].partition("=")[0]


def _with_metadata(args: list[str], isvc_name: str) -> list[str]:
    """The args as KServe runs them: ``{{.Name}}`` is the InferenceService's name."""
    filled = [arg.replace("{{.Name}}", isvc_name) for arg in args]
    assert not [arg for arg in filled if "{{" in arg], "a placeholder this test does not fill"
    return filled


def _options(isvc: Doc) -> ServerOptions:
    """What ``rollway serve`` makes of the runtime's args plus the InferenceService's."""
    args = [*_container()["args"], *_model(isvc).get("args", [])]
    return parse_flags(_with_metadata(args, isvc["metadata"]["name"]), env={}).options


# --- KServe's runtime selection (predictor_model.go), restated ---------------------------


def _format_labels(spec: Mapping[str, Any], runtime_named: bool) -> set[str]:
    labels: set[str] = set()
    for entry in spec.get("supportedModelFormats", []):
        if runtime_named or entry.get("autoSelect") is True:
            labels.add(f"mt:{entry['name']}")
            if "version" in entry:
                labels.add(f"mt:{entry['name']}:{entry['version']}")
    return labels


def _supports(spec: Mapping[str, Any], model: Doc) -> bool:
    model_format = model["modelFormat"]
    label = f"mt:{model_format['name']}"
    if "version" in model_format:
        label += f":{model_format['version']}"
    protocols = spec.get("protocolVersions") or []
    protocol = model.get("protocolVersion", DEFAULT_PROTOCOL)
    return (
        not spec.get("disabled")
        and not spec.get("multiModel")
        and label in _format_labels(spec, runtime_named="runtime" in model)
        and (not protocols or protocol in protocols)
    )


def _priority(spec: Mapping[str, Any], format_name: str) -> int | None:
    for entry in spec.get("supportedModelFormats", []):
        if entry["name"] == format_name:
            priority: int | None = entry.get("priority")
            return priority
    return None


def _selected_runtime(runtimes: Mapping[str, Mapping[str, Any]], model: Doc) -> str:
    """The runtime KServe gives this predictor; a tie for the top is an error here."""
    if "runtime" in model:
        name: str = model["runtime"]
        assert _supports(runtimes[name], model), f"{name} does not support {model}"
        return name
    candidates = [name for name, spec in runtimes.items() if _supports(spec, model)]
    assert candidates, f"no runtime supports {model}"
    fmt = model["modelFormat"]["name"]
    ranked = sorted(candidates, key=lambda n: -(_priority(runtimes[n], fmt) or 0))
    top = _priority(runtimes[ranked[0]], fmt)
    tied = [n for n in ranked if _priority(runtimes[n], fmt) == top]
    assert len(tied) == 1, f"KServe's choice among {tied} is arbitrary (equal priority)"
    return ranked[0]


# --- schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [".", "examples"])
def test_kserve_manifests_render_and_validate(directory: str) -> None:
    docs = _rendered(directory)
    assert docs
    assert [problem for doc in docs for problem in validate_resource(doc)] == []


def test_kserve_kinds_are_checked_against_kserve_crds() -> None:
    assert {RUNTIME_KIND, ISVC_KIND} <= crd_kinds()
    assert {(d["apiVersion"], d["kind"]) for d in _rendered(".")} == {RUNTIME_KIND}
    assert {(d["apiVersion"], d["kind"]) for d in _rendered("examples")} == {
        ISVC_KIND,
        ("v1", "ServiceAccount"),
    }


def test_kserve_manifests_are_namespace_free() -> None:
    """The runtime is cluster-scoped; the examples go where `kubectl -n` says."""
    for doc in (*_rendered("."), *_rendered("examples")):
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rollway"


def test_overlays_render_nothing_of_kserve(docs: tuple[Doc, ...]) -> None:
    assert [d["kind"] for d in docs if d["apiVersion"].startswith("serving.kserve.io/")] == []


# --- the runtime -----------------------------------------------------------------------


def test_runtime_auto_selects_tensorflow_above_kserves_own() -> None:
    formats = _runtime()["spec"]["supportedModelFormats"]
    assert {f["name"] for f in formats} == {"tensorflow"}
    assert sorted(f["version"] for f in formats) == ["1", "2"]
    assert all(f["autoSelect"] is True for f in formats)
    builtin = max(_priority(spec, "tensorflow") or 0 for spec in KSERVE_BUILTIN_RUNTIMES.values())
    assert {f["priority"] for f in formats} == {builtin + 1}


def test_runtime_speaks_all_four_protocols() -> None:
    protocols = _runtime()["spec"]["protocolVersions"]
    assert sorted(protocols) == sorted(PROTOCOLS)
    assert protocols[0] == DEFAULT_PROTOCOL


def test_runtime_container_follows_kserve_and_the_image() -> None:
    container = _container()
    assert container["name"] == KSERVE_CONTAINER
    image, _, tag = container["image"].rpartition(":")
    base_image, _, base_tag = _base_serving_container()["image"].rpartition(":")
    assert (image, tag) == (base_image, base_tag)
    kustomization = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())
    assert [i["name"] for i in kustomization["images"]] == [image]
    instructions = parse(INFRA / "images" / "serving.Containerfile")
    entrypoint = [i.argument for i in instructions if i.keyword == "ENTRYPOINT"]
    assert [yaml.safe_load(e) for e in entrypoint] == [container["command"]]
    assert "--model_name={{.Name}}" in container["args"]
    assert f"--model_base_path={MODEL_MOUNT}" in container["args"]


def test_runtime_args_are_rollway_serve_flags() -> None:
    known = {f.name for f in dataclasses.fields(ServerOptions)}
    args: list[str] = _container()["args"]
    unknown = [arg for arg in args if _flag_name(arg) not in known]
    assert unknown == []
    assert len({_flag_name(arg) for arg in args}) == len(args), "a flag given twice"
    # rollway serve's own parser and cross-flag validation accept them (exit 2 otherwise).
    options = parse_flags(_with_metadata(args, "mnist"), env={}).options
    assert options.model_name == "mnist"
    assert options.model_base_path == MODEL_MOUNT
    assert options.file_system_poll_wait_seconds == 0


@pytest.mark.parametrize("isvc", _inference_services(), ids=lambda d: d["metadata"]["name"])
def test_example_args_are_rollway_serve_flags(isvc: Doc) -> None:
    known = {f.name for f in dataclasses.fields(ServerOptions)}
    extra: list[str] = _model(isvc).get("args", [])
    assert [arg for arg in extra if _flag_name(arg) not in known] == []
    assert _options(isvc).model_name == isvc["metadata"]["name"]


def test_runtime_ports_probes_and_args_agree() -> None:
    from functions.serving.api.tfserving.rest_api import READY_PATH

    container = _container()
    options = parse_flags(_with_metadata(container["args"], "mnist"), env={}).options
    # No ports: KServe merges an InferenceService's ports into the runtime's by
    # number, and Knative routes only one port per container.
    assert "ports" not in container
    assert options.rest_api_port == DEFAULT_HTTP_PORT
    assert options.port not in (0, DEFAULT_HTTP_PORT)
    assert options.enable_grpc_healthcheck_service
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": READY_PATH, "port": options.rest_api_port}
    assert "livenessProbe" not in container  # as in base/serving-*.yaml (comment there)


def test_runtime_security_and_resources_match_the_serving_services() -> None:
    container, base = _container(), _base_serving_container()
    security = container["securityContext"]
    assert security == base["securityContext"]  # Knative refuses more (privileged) before 1.17
    instructions = parse(INFRA / "images" / "serving.Containerfile")
    users = [i.argument for i in instructions if i.keyword == "USER"]
    assert users == [f"{security['runAsUser']}:{security['runAsGroup']}"]
    # The root is read-only: /tmp is an emptyDir of the runtime's own.
    volumes = {v["name"]: v for v in _runtime()["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert MODEL_MOUNT not in mounts  # KServe's storage initializer mounts it
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key] == base["resources"]["requests"][key]


# --- the examples ----------------------------------------------------------------------


@pytest.mark.parametrize("isvc", _inference_services(), ids=lambda d: d["metadata"]["name"])
def test_example_resolves_to_the_rollway_runtime(isvc: Doc) -> None:
    runtimes = {**KSERVE_BUILTIN_RUNTIMES, RUNTIME_NAME: _runtime()["spec"]}
    model = _model(isvc)
    assert _selected_runtime(runtimes, model) == RUNTIME_NAME
    assert model["storageUri"].startswith("s3://")
    accounts = {
        d["metadata"]["name"] for d in _rendered("examples") if d["kind"] == "ServiceAccount"
    }
    assert isvc["spec"]["predictor"]["serviceAccountName"] in accounts


def test_examples_cover_auto_select_v2_and_grpc() -> None:
    models = {isvc["metadata"]["name"]: _model(isvc) for isvc in _inference_services()}
    auto = [m for m in models.values() if "runtime" not in m]
    assert auto and all(m["modelFormat"]["name"] == "tensorflow" for m in auto)
    assert all(m.get("protocolVersion", DEFAULT_PROTOCOL) == "v1" for m in auto)
    named = {m.get("protocolVersion") for m in models.values() if m.get("runtime") == RUNTIME_NAME}
    assert {"v2", "grpc-v2"} <= named
    # Without the runtime named, KServe would give a v2 predictor to another
    # runtime only if rollway's priority lost: it does not.
    runtimes = {**KSERVE_BUILTIN_RUNTIMES, RUNTIME_NAME: _runtime()["spec"]}
    for protocol in sorted(PROTOCOLS):
        model = {"modelFormat": {"name": "tensorflow"}, "protocolVersion": protocol}
        assert _selected_runtime(runtimes, model) == RUNTIME_NAME, protocol


@pytest.mark.parametrize("isvc", _inference_services(), ids=lambda d: d["metadata"]["name"])
def test_example_ports_match_the_protocol(isvc: Doc) -> None:
    model = _model(isvc)
    options = _options(isvc)
    if model.get("protocolVersion", DEFAULT_PROTOCOL).startswith("grpc-"):
        # Knative routes HTTP/2 to the one port named h2c: rollway's gRPC port.
        assert [(p["name"], p["containerPort"]) for p in model["ports"]] == [("h2c", options.port)]
    else:
        assert "ports" not in model  # HTTP to the default port, rollway's REST port
        assert options.rest_api_port == DEFAULT_HTTP_PORT


def test_readme_documents_kserve() -> None:
    readme = (INFRA / "README.md").read_text()
    assert "## Deploying through KServe" in readme
    assert "kubectl apply -k infra/kserve" in readme


# --- a real cluster --------------------------------------------------------------------

needs_cluster = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="KUBECONFIG is not set: no cluster to dry-run the KServe manifests against",
)


@needs_cluster
def test_runtime_passes_a_server_side_dry_run() -> None:
    require_on_cluster("customresourcedefinition", "clusterservingruntimes.serving.kserve.io")
    result = cluster_kubectl("apply", "--dry-run=server", "-k", str(KSERVE))
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout


@needs_cluster
def test_examples_pass_a_server_side_dry_run() -> None:
    """KServe's webhooks resolve the runtime, so it must be installed for real."""
    require_on_cluster("customresourcedefinition", "inferenceservices.serving.kserve.io")
    require_on_cluster("clusterservingruntime", RUNTIME_NAME)
    namespace = os.environ.get("ROLLWAY_TEST_NAMESPACE", "default")
    require_on_cluster("namespace", namespace)
    result = cluster_kubectl("apply", "--dry-run=server", "-n", namespace, "-k", str(EXAMPLES))
    assert result.returncode == 0, result.stderr
