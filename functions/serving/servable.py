"""One loaded SavedModel version: its signatures and how to run them.

The contract of :meth:`Servable.run`: inputs are validated against the
signature (names, dtypes, shapes) before TensorFlow sees them, so a bad
request is an ``InvalidArgument`` that names the input, never an internal
error. TensorFlow's own errors are mapped by their canonical code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy.typing as npt

from functions.serving import metrics, saved_model, tensors
from functions.serving.batching import Batcher, BatchingOptions
from loader.errors import (
    Code,
    FailedPrecondition,
    InvalidArgument,
    error_for_code,
)
from loader.versions import VersionId

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorSpec:
    dtype: int  # TensorFlow DataType enum value
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension

    def describe(self) -> str:
        dims = "?" if self.shape is None else str(list(self.shape))
        return f"{tensors.dtype_name(self.dtype)} {dims}"


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    function: Any  # a tf.types.experimental.ConcreteFunction

    def __call__(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return _invoke(self.function, inputs)


def _spec(tensor_info: Any, legacy: bool) -> TensorSpec:
    """A TensorInfo without a shape, or (in producer <= 21 graphs) with an empty
    one, means "any shape"."""
    shape = tensor_info.tensor_shape
    unknown = (
        not tensor_info.HasField("tensor_shape") or shape.unknown_rank or (legacy and not shape.dim)
    )
    return TensorSpec(int(tensor_info.dtype), None if unknown else tuple(d.size for d in shape.dim))


class Servable:
    """A loaded version. Immutable after construction; safe to share across threads."""

    def __init__(
        self,
        version_id: VersionId,
        path: Path,
        meta_graph: Any,
        model: Any,
        batching: BatchingOptions | None = None,
    ):
        from tensorflow_serving.apis import get_model_metadata_pb2

        self.version_id = version_id
        self.batcher = Batcher(batching) if batching is not None else None
        self.path = path
        self.signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for key, sig_def in meta_graph.signature_def.items():
            self.signature_defs.signature_def[key].CopyFrom(sig_def)
        legacy = saved_model.is_legacy(meta_graph)
        self._model = model  # keeps the TF objects (variables, functions) alive
        self.signatures: dict[str, Signature] = {}
        for key, fn in model.signatures.items():
            sig_def = self.signature_defs.signature_def.get(key)
            if sig_def is None:
                continue
            self.signatures[key] = Signature(
                name=key,
                method_name=str(sig_def.method_name),
                inputs={k: _spec(v, legacy) for k, v in sig_def.inputs.items()},
                outputs={k: _spec(v, legacy) for k, v in sig_def.outputs.items()},
                function=fn,
            )

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or DEFAULT_SIGNATURE)
        if sig is None:
            raise FailedPrecondition(
                f'Serving signature key "{name or DEFAULT_SIGNATURE}" not found.'
            )
        return sig

    @staticmethod
    def check_input_names(signature: Signature, names: Iterable[str]) -> None:
        """TF Serving's checks on input aliases, made before any tensor is decoded."""
        sent, expected = set(names), set(signature.inputs)
        if len(sent) != len(expected):
            raise InvalidArgument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
            )
        for name in sorted(sent - expected):
            raise InvalidArgument(
                f"input tensor alias not found in signature: {name}. Inputs expected to be in "
                f"the set {{{','.join(sorted(expected))}}}."
            )

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, npt.NDArray[Any]],
        output_filter: Iterable[str] = (),
        api: str = "Predict",
    ) -> dict[str, npt.NDArray[Any]]:
        """Runs ``signature``; returns the outputs named in ``output_filter`` (all if empty).
        ``api`` labels the runtime latency metric."""
        self.check_input_names(signature, inputs.keys())
        _check_tensors(signature, inputs)
        wanted = _check_output_filter(signature, output_filter)
        if self.batcher is not None:
            outputs = self.batcher.run(
                signature.name, inputs, lambda batch: self._call(signature, batch, api)
            )
        else:
            outputs = self._call(signature, inputs, api)
        return {k: v for k, v in outputs.items() if k in wanted}

    def _call(
        self, signature: Signature, inputs: Mapping[str, npt.NDArray[Any]], api: str
    ) -> dict[str, npt.NDArray[Any]]:
        import tensorflow as tf

        try:
            # Converting first is ~30us faster than letting the function bind numpy.
            tensors_in = {k: tf.constant(v) for k, v in inputs.items()}
            with metrics.runtime(self.version_id.model, api):
                result = signature(tensors_in)
        except tf.errors.OpError as err:
            raise error_for_code(Code(err.error_code), tf_error_message(err.message)) from err
        except UnicodeDecodeError as err:  # TF failed to format its own error about the input
            raise InvalidArgument(
                f"signature {signature.name!r} rejected the input (TensorFlow's error message "
                "about it is not valid UTF-8)"
            ) from err
        except (TypeError, ValueError) as err:
            raise InvalidArgument(f"signature {signature.name!r}: {err}") from err
        return {k: v.numpy() for k, v in result.items()}


def _check_tensors(signature: Signature, inputs: Mapping[str, npt.NDArray[Any]]) -> None:
    for name, array in inputs.items():
        spec = signature.inputs[name]
        got = _dtype_enum(array)
        if got != spec.dtype:
            raise InvalidArgument(
                f'input "{name}": expects dtype {tensors.dtype_name(spec.dtype)} but '
                f"{tensors.dtype_name(got)} was provided"
            )
        if spec.shape is not None and not _shape_matches(spec.shape, array.shape):
            raise InvalidArgument(
                f'input "{name}": shape {list(array.shape)} is not compatible with the '
                f"signature's shape {[d if d >= 0 else -1 for d in spec.shape]}"
            )


def _invoke(function: Any, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Calls a loaded signature function with tensors keyed by input name.

    The public call binds arguments in Python, which costs about 40us per call
    (a third of a small model's whole latency). Inputs were already checked
    against the SignatureDef (names, dtypes, shapes), which is what that
    binding checks, so when the function exposes TensorFlow's flat-call entry
    point (``_call_flat``; TensorFlow is pinned to 2.21.*) it is called
    directly, in the function's parameter order. Anything unexpected falls
    back to the public call.
    """
    call_flat = getattr(function, "_call_flat", None)
    function_type = getattr(function, "function_type", None)
    if call_flat is not None and function_type is not None:
        names = list(function_type.parameters)
        if len(names) == len(inputs):
            try:
                args = [inputs[name] for name in names]
            except KeyError:
                pass
            else:
                result = call_flat(args, function.captured_inputs)
                if isinstance(result, Mapping):
                    return result
    result = function(**inputs)
    return cast(Mapping[str, Any], result)


def tf_error_message(message: str) -> str:
    """TensorFlow's error without the Python stack of where the failing node was
    defined (server internals clients must not see), e.g. "Incompatible shapes:
    [2,2] vs. [3,2]" from "Graph execution error: Detected at node mul ...".
    """
    lines = message.splitlines()
    if not lines or not lines[0].startswith("Graph execution error"):
        return message
    kept = [
        line
        for line in lines[1:]
        if line.strip()
        and not line.startswith(("Detected at node", " ", "\t", "<stack traces unavailable>"))
    ]
    return "; ".join(kept) or message


def _dtype_enum(array: npt.NDArray[Any]) -> int:
    if array.dtype == object:
        return 7
    for enum, dtype in tensors.BY_ENUM.items():
        if dtype.numpy == array.dtype:
            return enum
    return 0


def _shape_matches(expected: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(expected) == len(actual) and all(
        e < 0 or e == a for e, a in zip(expected, actual, strict=True)
    )


def _check_output_filter(signature: Signature, output_filter: Iterable[str]) -> set[str]:
    wanted: set[str] = set()
    for name in output_filter:
        if name not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {name} Outputs expected to be in "
                f"the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if name in wanted:
            raise InvalidArgument(f"duplicate output tensor alias: {name}")
        wanted.add(name)
    return wanted or set(signature.outputs)
