"""The data plane's value types: what adapters hand in and get back.

They are protocol-neutral: TF Serving's gRPC and REST adapters (and a second
protocol later) build a :class:`ModelSelector` from their own wire format and
render :class:`Prediction` and the result types themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from functions.serving.codecs.specs import TensorSpec
from functions.serving.core.lifecycle import VersionState, VersionStatus
from functions.serving.runtime.servable import DEFAULT_SIGNATURE, SignatureNotFound
from loader.errors import InvalidArgument
from loader.versions import VersionId

__all__ = [
    "DEFAULT_SIGNATURE",
    "Class",
    "Classification",
    "Decode",
    "Metadata",
    "ModelSelector",
    "Prediction",
    "Regression",
    "Served",
    "SignatureNotFound",
    "Task",
    "VersionState",
    "VersionStatus",
]

SIGNATURE_DEF_FIELD = "signature_def"

# Turns a request's tensors into arrays, given the signature's input types.
Decode = Callable[[Mapping[str, TensorSpec]], Mapping[str, npt.NDArray[Any]]]


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
class Served:
    """Which version and signature produced a result (for the response's model_spec)."""

    version_id: VersionId
    signature_name: str


@dataclass(frozen=True)
class Prediction:
    served: Served
    outputs: dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class Class:
    """One class of one example: TF Serving's ``Class`` (label and score)."""

    label: str
    score: float


# Per example, its classes in the model's order (Classify).
Classification = tuple[tuple[Class, ...], ...]
# One value per example (Regress).
Regression = tuple[float, ...]


@dataclass(frozen=True)
class Metadata:
    version_id: VersionId
    signature_defs: Any  # a tensorflow.serving.SignatureDefMap


@dataclass(frozen=True)
class Task:
    """One MultiInference task: a signature and the method to apply with it."""

    selector: ModelSelector
    method_name: str
