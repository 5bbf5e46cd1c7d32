"""The data plane: Predict and GetModelMetadata, independent of the transport.

Adapters (gRPC now, REST later) turn their wire format into a
:class:`ModelSelector` plus raw inputs and a decoder, and the results back.
The order of checks is TF Serving's, so the same bad request gets the same
status code: model spec, servable lookup, signature, input names, tensor
decoding, dtypes and shapes, output filter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy.typing as npt

from functions.serving.manager import Manager, VersionStatus
from functions.serving.servable import Servable
from loader.errors import InvalidArgument, NotFound
from loader.versions import VersionId

T = TypeVar("T")
SIGNATURE_DEF_FIELD = "signature_def"


@dataclass(frozen=True)
class ModelSelector:
    """Which servable a request names: TF Serving's ModelSpec, validated."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("ModelSpec has no name specified.")


@dataclass(frozen=True)
class Prediction:
    version_id: VersionId
    signature_name: str
    outputs: dict[str, npt.NDArray[Any]]


def predict(
    manager: Manager,
    selector: ModelSelector,
    inputs: Mapping[str, T],
    decode: Callable[[T, str], npt.NDArray[Any]],
    output_filter: Iterable[str] = (),
) -> Prediction:
    servable = manager.resolve(selector.name, selector.version, selector.label)
    return predict_with(servable, selector.signature_name, inputs, decode, output_filter)


def predict_with(
    servable: Servable,
    signature_name: str,
    inputs: Mapping[str, T],
    decode: Callable[[T, str], npt.NDArray[Any]],
    output_filter: Iterable[str] = (),
) -> Prediction:
    """Predict on a given servable (requests, and warmup before it is AVAILABLE)."""
    signature = servable.signature(signature_name)
    servable.check_input_names(signature, inputs.keys())
    arrays = {name: decode(value, f'input "{name}"') for name, value in inputs.items()}
    outputs = servable.run(signature, arrays, output_filter)
    return Prediction(servable.version_id, signature.name, outputs)


def model_metadata(
    manager: Manager, selector: ModelSelector, fields: Iterable[str]
) -> tuple[Servable, Any]:
    """The servable and its SignatureDefMap; only the signature_def field exists."""
    fields = list(fields)
    if not fields:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for name in fields:
        if name != SIGNATURE_DEF_FIELD:
            raise InvalidArgument(f"Metadata field {name} is not supported")
    servable = manager.resolve(selector.name, selector.version, selector.label)
    return servable, servable.signature_defs


def model_status(manager: Manager, name: str, version: int | None) -> list[VersionStatus]:
    """GetModelStatus: every known version newest first, or the one asked for."""
    if not name:
        raise InvalidArgument("ModelSpec has no name specified.")
    statuses = manager.statuses(name)
    if version is not None:
        statuses = [s for s in statuses if s.version == version]
        if not statuses:
            raise NotFound(f"Could not find version {version} of model {name}")
    elif not statuses:
        raise NotFound(f"Could not find any versions of model {name}")
    return statuses
