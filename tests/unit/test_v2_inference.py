"""V2Api over a real DataPlane and real Servables whose signatures run Python
(no TensorFlow session): addressing, the datatype and shape checks, output
selection, metadata, the repository index and load/unload's refusals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest

from functions.serving.api.v2.inference import (
    InferRequest,
    InputTensor,
    RequestedOutput,
    TensorMetadata,
    V2Api,
)
from functions.serving.codecs.specs import TensorSpec
from functions.serving.core.lifecycle import VersionState, VersionStatus
from functions.serving.dataplane.plane import DataPlane
from functions.serving.runtime.servable import LoadedModel, Servable, Signature
from loader.errors import Code, FailedPrecondition, InvalidArgument, LoadError, NotFound
from loader.versions import VersionId

FLOAT, STRING, COMPLEX = 1, 7, 8


def _signature_def(inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec]) -> Any:
    from tensorflow.core.protobuf import meta_graph_pb2

    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for target, specs in ((sig.inputs, inputs), (sig.outputs, outputs)):
        for name, spec in specs.items():
            info = target[name]
            info.name, info.dtype = f"{name}:0", spec.dtype
            if spec.shape is None:
                info.tensor_shape.unknown_rank = True
            for size in spec.shape or ():
                info.tensor_shape.dim.add(size=size)
    return sig


def _servable(model: str, version: int) -> Servable:
    """y = x * version + 0.5; s echoes the bytes; z is complex (no v2 datatype)."""
    inputs = {"x": TensorSpec(FLOAT, (-1, 2)), "s": TensorSpec(STRING, None)}
    outputs = {"y": TensorSpec(FLOAT, (-1, 2)), "s_out": TensorSpec(STRING, None)}

    def run(arrays: Mapping[str, npt.NDArray[Any]], wanted: tuple[str, ...]) -> dict[str, Any]:
        every = {"y": arrays["x"] * version + 0.5, "s_out": arrays["s"]}
        return {k: every[k] for k in wanted}

    signature = Signature("serving_default", "tensorflow/serving/predict", inputs, outputs, run)
    complex_sig = Signature("complex", "m", {"z": TensorSpec(COMPLEX, (1,))}, {}, run)
    loaded = LoadedModel(
        {"serving_default": _signature_def(inputs, outputs)},
        {"serving_default": signature, "complex": complex_sig},
        None,
    )
    return Servable(VersionId(model, version), Path("/nonexistent"), loaded)


class FakeManager:
    """The manager's request-path answers (a fake: the manager has its own tests)."""

    def __init__(self) -> None:
        self.available = {"m": {1: _servable("m", 1), 2: _servable("m", 2)}}
        self.label_map = {"m": {"stable": 1}}
        self.failed: dict[str, list[VersionStatus]] = {}

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        versions = self.available.get(name, {})
        if label is not None:
            if label not in self.label_map.get(name, {}):
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = self.label_map[name][label]
        if version is None:
            if not versions:
                raise NotFound(f"Servable not found for request: Latest({name})")
            version = max(versions)
        if version not in versions:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return versions[version]

    def statuses(self, name: str) -> list[VersionStatus]:
        found = [VersionStatus(v, VersionState.AVAILABLE) for v in self.available.get(name, {})]
        return sorted(found + self.failed.get(name, []), key=lambda s: -s.version)

    def is_ready(self) -> bool:
        return True


class FakeRepository:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def names(self) -> Sequence[str]:
        return ["m", "gone"]

    def load(self, name: str) -> None:
        self.calls.append(("load", name))

    def unload(self, name: str) -> None:
        self.calls.append(("unload", name))


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


@pytest.fixture
def repository() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def api(manager: FakeManager, repository: FakeRepository) -> V2Api:
    return V2Api(DataPlane(cast(Any, manager)), repository, server_version="9.9")


def _x(values: list[list[float]]) -> InputTensor:
    array = np.array(values, np.float32)
    return InputTensor("x", "FP32", array.shape, array)


def _s(*items: bytes) -> InputTensor:
    array = np.array(items, dtype=object)
    return InputTensor("s", "BYTES", array.shape, array)


def _request(
    *inputs: InputTensor,
    version: str = "",
    outputs: Sequence[RequestedOutput] = (),
    parameters: Mapping[str, Any] | None = None,
) -> InferRequest:
    return InferRequest("m", version, "req-1", parameters or {}, inputs, outputs)


def test_health_and_server_metadata(api: V2Api) -> None:
    assert api.live() and api.ready()
    meta = api.server_metadata()
    assert (meta.name, meta.version) == ("rollway", "9.9")
    assert "binary_tensor_data" in meta.extensions and "model_repository" in meta.extensions


def test_infer_default_version_is_the_latest(api: V2Api) -> None:
    response = api.infer(_request(_x([[1, 2]]), _s(b"a")))
    assert (response.model_name, response.model_version, response.id) == ("m", "2", "req-1")
    outputs = {o.name: o for o in response.outputs}
    assert outputs["y"].datatype == "FP32" and outputs["y"].shape == (1, 2)
    assert outputs["y"].array.tolist() == [[2.5, 4.5]]
    assert outputs["s_out"].datatype == "BYTES" and outputs["s_out"].array.tolist() == [b"a"]


@pytest.mark.parametrize(("version", "served"), [("1", "1"), ("2", "2"), ("stable", "1")])
def test_infer_addresses_versions_and_labels(api: V2Api, version: str, served: str) -> None:
    assert api.infer(_request(_x([[1, 1]]), _s(b""), version=version)).model_version == served


def test_output_selection_keeps_the_request_order(api: V2Api) -> None:
    wanted = [RequestedOutput("s_out", binary=True), RequestedOutput("y")]
    response = api.infer(_request(_x([[1, 1]]), _s(b"q"), outputs=wanted))
    assert [o.name for o in response.outputs] == ["s_out", "y"]
    only = api.infer(_request(_x([[1, 1]]), _s(b"q"), outputs=[RequestedOutput("y")]))
    assert [o.name for o in only.outputs] == ["y"]


@pytest.mark.parametrize(
    ("request_", "error", "match"),
    [
        (_request(_x([[1, 1]]), _s(b""), version="7"), NotFound, "Specific\\(m, 7\\)"),
        (_request(_x([[1, 1]]), _s(b""), version="nolabel"), NotFound, "nolabel"),
        (
            InferRequest("nope", "", "", {}, [_x([[1, 1]])]),
            NotFound,
            "Latest\\(nope\\)",
        ),
        (InferRequest("", "", "", {}, [_x([[1, 1]])]), InvalidArgument, "names no model"),
        (
            _request(InputTensor("x", "FP64", (1, 2), np.zeros((1, 2))), _s(b"")),
            InvalidArgument,
            'input "x": datatype FP64 does not match the model\'s FP32',
        ),
        (
            _request(_x([[1, 1, 1]]), _s(b"")),
            InvalidArgument,
            'input "x": shape \\[1, 3\\] does not match the model\'s \\[-1, 2\\]',
        ),
        (
            _request(InputTensor("x", "FP32", (2,), np.zeros(2, np.float32)), _s(b"")),
            InvalidArgument,
            'input "x": shape \\[2\\]',
        ),
        (_request(_x([[1, 1]])), InvalidArgument, "Missing but required: \\{s\\}"),
        (_request(_x([[1, 1]]), _s(b""), _x([[1, 1]])), InvalidArgument, "more than once"),
        (
            _request(_x([[1, 1]]), _s(b""), outputs=[RequestedOutput("nope")]),
            InvalidArgument,
            "output tensor alias not found in signature: nope",
        ),
        (
            _request(_x([[1, 1]]), _s(b""), outputs=[RequestedOutput("y"), RequestedOutput("y")]),
            InvalidArgument,
            "more than once",
        ),
        (
            _request(_x([[1, 1]]), _s(b""), parameters={"signature_name": "nope"}),
            FailedPrecondition,
            '"nope" not found',
        ),
        (
            _request(_x([[1, 1]]), parameters={"signature_name": 3}),
            InvalidArgument,
            "signature_name",
        ),
        (
            _request(
                InputTensor("z", "FP32", (1,), np.zeros(1, np.float32)),
                parameters={"signature_name": "complex"},
            ),
            InvalidArgument,
            'input "z": dtype DT_COMPLEX64 has no Open Inference Protocol datatype',
        ),
    ],
)
def test_infer_errors(api: V2Api, request_: InferRequest, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        api.infer(request_)


def test_model_ready(api: V2Api) -> None:
    assert api.model_ready("m", "") and api.model_ready("m", "1") and api.model_ready("m", "stable")
    assert not api.model_ready("m", "3")
    assert not api.model_ready("m", "canary")
    assert not api.model_ready("nope", "")


def test_model_metadata(api: V2Api) -> None:
    meta = api.model_metadata("m", "")
    assert (meta.name, list(meta.versions), meta.platform) == (
        "m",
        ["1", "2"],
        "tensorflow_savedmodel",
    )
    assert list(meta.inputs) == [
        TensorMetadata("s", "BYTES", (-1,)),
        TensorMetadata("x", "FP32", (-1, 2)),
    ]
    assert [o.name for o in meta.outputs] == ["s_out", "y"]
    assert api.model_metadata("m", "stable").name == "m"
    with pytest.raises(NotFound):
        api.model_metadata("m", "5")
    with pytest.raises(NotFound):
        api.model_metadata("nope", "")


def test_repository_index(api: V2Api, manager: FakeManager) -> None:
    broken = LoadError("broken", Code.FAILED_PRECONDITION)
    manager.failed["m"] = [VersionStatus(3, VersionState.END, broken)]
    entries = api.repository_index(ready_only=False)
    assert [(e.name, e.version, e.state) for e in entries] == [
        ("gone", "", "UNAVAILABLE"),
        ("m", "3", "UNAVAILABLE"),
        ("m", "2", "READY"),
        ("m", "1", "READY"),
    ]
    assert entries[1].reason == "broken"
    ready = api.repository_index(ready_only=True)
    assert [(e.name, e.version) for e in ready] == [("m", "2"), ("m", "1")]


def test_load_and_unload_go_to_the_repository(api: V2Api, repository: FakeRepository) -> None:
    api.load("m")
    api.unload("m", {})
    assert repository.calls == [("load", "m"), ("unload", "m")]


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        ({"config": "{}"}, 'parameter "config" is refused'),
        ({"file:1/model.savedmodel/saved_model.pb": "AAAA"}, 'parameter "file:1/model'),
        ({"other": 1}, "not supported"),
    ],
)
def test_load_refuses_configs_files_and_parameters(
    api: V2Api, repository: FakeRepository, parameters: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        api.load("m", parameters)
    with pytest.raises(InvalidArgument, match=match):
        api.unload("m", parameters)
    with pytest.raises(InvalidArgument, match="names no model"):
        api.load("")
    assert repository.calls == []


# ------------------------------------------------- the server's repositories


def _spec(name: str) -> Any:
    from loader.model_config import ModelSpec

    return ModelSpec(name, f"/models/{name}")


class FakeConfig:
    """The served config and a reload that replaces it, as ServingCore.reload."""

    def __init__(self, *served: str) -> None:
        self.served = [_spec(n) for n in served]
        self.reloads: list[list[str]] = []

    def reload(self, specs: Sequence[Any]) -> None:
        self.served = list(specs)
        self.reloads.append([s.name for s in specs])


def test_config_repository_unloads_and_loads_back_through_reload() -> None:
    from functions.serving.api.v2.repository import ConfigRepository

    config = FakeConfig("a", "b")
    catalog = [_spec("a"), _spec("b"), _spec("c")]
    repository = ConfigRepository(lambda: config.served, lambda: catalog, config.reload)
    assert repository.names() == ["a", "b", "c"]
    repository.unload("b")
    repository.unload("b")  # not served now: nothing to do
    repository.load("c")
    repository.load("c")  # served already
    assert config.reloads == [["a"], ["a", "c"]]
    assert [s.base_path for s in config.served] == ["/models/a", "/models/c"]
    for change in (repository.load, repository.unload):
        with pytest.raises(NotFound, match="model nope is not in"):
            change("nope")
    assert config.reloads == [["a"], ["a", "c"]]


def test_assigned_repository_refuses_changes() -> None:
    from functions.serving.api.v2.repository import AssignedRepository

    repository = AssignedRepository(lambda: [_spec("m")])
    assert repository.names() == ["m"]
    for change in (repository.load, repository.unload):
        with pytest.raises(FailedPrecondition, match="change assignments instead"):
            change("m")
