"""The Open Inference Protocol (v2), protocol-neutral: what its REST and gRPC
adapters hand in and get back, and :class:`V2Api`, which answers them from
the one :class:`DataPlane`.

Addressing is TF Serving's: a model's ``version`` "" is its default (the
latest AVAILABLE version, as a Predict without a version), digits name a
version, anything else a version label (``stable``, ``canary``). The
signature is the request parameter ``signature_name``, else
``serving_default``; metadata describes that default signature.

Inputs arrive decoded (``codecs.v2_tensors``, whose decoding is bounded by
the request's size); the :data:`Decode` handed to the data plane only checks
each input's datatype and shape against the signature's TensorSpec, so a
mismatch is an InvalidArgument naming the input and never reaches
TensorFlow.

Load and unload go to a :class:`Repository`, which the server implements
from how it is fed; no request may name a path, a config or file contents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from functions.serving.codecs import v2_tensors
from functions.serving.codecs.specs import TensorSpec
from functions.serving.codecs.tensors import dtype_name
from functions.serving.dataplane.plane import DataPlane
from functions.serving.dataplane.types import (
    DEFAULT_SIGNATURE,
    SIGNATURE_DEF_FIELD,
    ModelSelector,
    VersionState,
    VersionStatus,
)
from loader.errors import InvalidArgument, NotFound, RollwayError

PLATFORM = "tensorflow_savedmodel"
SERVER_NAME = "rollway"
EXTENSIONS = ("binary_tensor_data", "model_repository")
SIGNATURE_PARAMETER = "signature_name"
# The request_latency metric's labels for v2 requests: API, and entrypoint by transport.
METRICS_API = "infer"
ENTRYPOINT_REST = "V2_REST"
ENTRYPOINT_GRPC = "V2_GRPC"

# The repository index's states (Triton's words) by lifecycle state.
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
_INDEX_STATES = {
    VersionState.START: "LOADING",
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: READY,
    VersionState.UNLOADING: "UNLOADING",
    VersionState.END: UNAVAILABLE,
}


@dataclass(frozen=True)
class Tensor:
    """A named v2 tensor, decoded: a request's input or a response's output."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: npt.NDArray[Any]


InputTensor = Tensor
OutputTensor = Tensor


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default (binary_data_output)


@dataclass(frozen=True)
class InferRequest:
    model: str
    version: str  # "": the model's default version
    id: str
    parameters: Mapping[str, Any]
    inputs: Sequence[InputTensor]
    outputs: Sequence[RequestedOutput] = ()  # empty: every output of the signature


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: Sequence[OutputTensor]
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: a dimension of any size; (-1,) also for unknown rank


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: Sequence[str]
    platform: str
    inputs: Sequence[TensorMetadata]
    outputs: Sequence[TensorMetadata]


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: Sequence[str]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str  # "" for a model with no version known
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str


class Repository(Protocol):
    """The models load and unload may name, as the server is fed.

    ``load`` and ``unload`` block until the change is applied (the versions
    loaded or failed, or unloaded); they raise NotFound for a model the
    repository does not hold and FailedPrecondition where the server's models
    cannot be changed this way (``--assignments``)."""

    def names(self) -> Sequence[str]:
        """Every model the repository holds, served or not."""
        ...

    def load(self, name: str) -> None: ...

    def unload(self, name: str) -> None: ...


class V2Api:
    """The v2 endpoints over one data plane; every method is blocking and
    thread-safe (the adapters run ``infer`` inline or on a pool)."""

    def __init__(
        self, plane: DataPlane, repository: Repository, *, server_version: str = ""
    ) -> None:
        self._plane = plane
        self._repository = repository
        self._server_version = server_version

    # ------------------------------------------------------------------ health

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """What /v1/ready says: every configured model has an AVAILABLE version."""
        return self._plane.ready()

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, self._server_version, EXTENSIONS)

    # ------------------------------------------------------------------ models

    def model_ready(self, name: str, version: str) -> bool:
        """The version (the default: any) is AVAILABLE; False for an unknown one."""
        try:
            self._resolve(name, version)
        except RollwayError:
            return False
        return True

    def model_metadata(self, name: str, version: str) -> ModelMetadata:
        metadata = self._resolve(name, version)
        signatures = metadata.signature_defs.signature_def
        key = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else None
        if key is None and len(signatures) == 1:
            key = next(iter(signatures))
        inputs: list[TensorMetadata] = []
        outputs: list[TensorMetadata] = []
        if key is not None:
            inputs = [_tensor_metadata(n, i) for n, i in sorted(signatures[key].inputs.items())]
            outputs = [_tensor_metadata(n, i) for n, i in sorted(signatures[key].outputs.items())]
        available = [
            str(s.version)
            for s in self._plane.status(name, None)
            if s.state is VersionState.AVAILABLE
        ]
        return ModelMetadata(name, sorted(available, key=int), PLATFORM, inputs, outputs)

    def infer(self, request: InferRequest) -> InferResponse:
        signature_name = request.parameters.get(SIGNATURE_PARAMETER, "")
        if not isinstance(signature_name, str):
            raise InvalidArgument(f'parameter "{SIGNATURE_PARAMETER}" must be a string')
        selector = self._selector(request.model, request.version, signature_name)
        if selector.label is not None:
            self._resolve(request.model, request.version)  # an unknown label is NotFound
        inputs = {t.name: t for t in request.inputs}
        if len(inputs) != len(request.inputs):
            raise InvalidArgument("inputs name the same tensor more than once")
        wanted = [o.name for o in request.outputs]
        if len(set(wanted)) != len(wanted):
            raise InvalidArgument("outputs name the same tensor more than once")

        def decode(specs: Mapping[str, TensorSpec]) -> dict[str, npt.NDArray[Any]]:
            for tensor in request.inputs:
                _check_input(tensor, specs[tensor.name])
            return {t.name: t.array for t in request.inputs}

        prediction = self._plane.predict(selector, decode, inputs.keys(), wanted)
        order = wanted or list(prediction.outputs)
        outputs = [_output(n, prediction.outputs[n]) for n in order]
        return InferResponse(
            request.model, str(prediction.served.version_id.version), request.id, outputs, {}
        )

    # -------------------------------------------------------------- repository

    def repository_index(self, ready_only: bool) -> list[IndexEntry]:
        """Every model of the repository with each version's state, or (``ready_only``)
        only the READY versions. A model with no version known is one entry
        with version "" and state UNAVAILABLE."""
        entries: list[IndexEntry] = []
        for name in sorted(set(self._repository.names())):
            statuses = self._statuses(name)
            if not statuses:
                entries.append(IndexEntry(name, "", UNAVAILABLE, "no version loaded"))
            entries += [_index_entry(name, s) for s in statuses]
        return [e for e in entries if e.state == READY] if ready_only else entries

    def load(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Serves ``name`` as the repository holds it. ``parameters`` are refused:
        Triton's ``config`` and ``file:`` ones would point the server at a
        new model definition or files, which only its operator may do."""
        _refuse_parameters(parameters)
        self._repository.load(_model_name(name))

    def unload(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        _refuse_parameters(parameters)
        self._repository.unload(_model_name(name))

    # ------------------------------------------------------------------ helpers

    def _selector(self, name: str, version: str, signature_name: str = "") -> ModelSelector:
        name = _model_name(name)
        if not version:
            return ModelSelector(name, signature_name=signature_name)
        if version.isascii() and version.isdigit():
            return ModelSelector(name, version=int(version), signature_name=signature_name)
        return ModelSelector(name, label=version, signature_name=signature_name)

    def _resolve(self, name: str, version: str) -> Any:
        """The version's Metadata; NotFound for an unknown model, version or label."""
        selector = self._selector(name, version)
        try:
            return self._plane.metadata(selector, [SIGNATURE_DEF_FIELD])
        except InvalidArgument as err:
            if selector.label is None:
                raise
            raise NotFound(f"model {name} has no version or label {version!r}") from err

    def _statuses(self, name: str) -> list[VersionStatus]:
        try:
            return self._plane.status(name, None)
        except NotFound:
            return []


def _model_name(name: str) -> str:
    if not name:
        raise InvalidArgument("the request names no model")
    return name


# What a load or unload may carry: tritonclient sends unload_dependents (a
# model here has no dependents, so it changes nothing).
_HARMLESS_PARAMETERS = frozenset({"unload_dependents"})


def _refuse_parameters(parameters: Mapping[str, Any] | None) -> None:
    for key in parameters or {}:
        if key in _HARMLESS_PARAMETERS:
            continue
        if key == "config" or key.startswith("file:"):
            raise InvalidArgument(
                f'parameter "{key[:64]}" is refused: rollway serves only the models its '
                "operator configured, never a config or files sent in a request"
            )
        raise InvalidArgument(f'parameter "{key[:64]}" is not supported by load and unload')


def _check_input(tensor: InputTensor, spec: TensorSpec) -> None:
    try:
        expected = v2_tensors.datatype_of_tf(spec.dtype)
    except InvalidArgument as err:
        raise InvalidArgument(f'input "{tensor.name}": {err.message}') from err
    if tensor.datatype != expected:
        raise InvalidArgument(
            f'input "{tensor.name}": datatype {tensor.datatype} does not match the model\'s '
            f"{expected}"
        )
    if spec.shape is None:
        return
    dims = spec.shape
    if len(tensor.shape) != len(dims) or any(
        want not in (-1, got) for want, got in zip(dims, tensor.shape, strict=True)
    ):
        raise InvalidArgument(
            f'input "{tensor.name}": shape {list(tensor.shape)} does not match the model\'s '
            f"{list(dims)} (-1: any size)"
        )


def _output(name: str, array: npt.NDArray[Any]) -> OutputTensor:
    return OutputTensor(name, v2_tensors.datatype_of(array), tuple(array.shape), array)


def _tensor_metadata(name: str, info: Any) -> TensorMetadata:
    """A SignatureDef's TensorInfo as v2 metadata: a dtype v2 lacks keeps its
    TensorFlow name (DT_COMPLEX64), so the model's metadata still answers."""
    try:
        datatype = v2_tensors.datatype_of_tf(int(info.dtype))
    except InvalidArgument:
        datatype = dtype_name(int(info.dtype))
    shape = info.tensor_shape
    dims = (-1,) if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
    return TensorMetadata(name, datatype, dims)


def _index_entry(name: str, status: VersionStatus) -> IndexEntry:
    state = _INDEX_STATES[status.state]
    if status.error is not None:
        reason = status.error.message
    elif state == UNAVAILABLE:
        reason = "unloaded"
    else:
        reason = ""
    return IndexEntry(name, str(status.version), state, reason)
