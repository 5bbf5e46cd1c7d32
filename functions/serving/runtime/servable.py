"""One loaded model version: its signatures and how to run them.

The contract of :meth:`Servable.run`: input names and dtypes are checked
against the signature before the runtime sees them, so such a bad request is
an ``InvalidArgument`` that names the input. Shapes are not checked, as in TF
Serving: the runtime answers every request it can run, and TensorFlow's own
error (mapped by its canonical code) for what it cannot.

How a signature runs is the runtime's business (a TensorFlow Session for
SavedModels, TensorFlow Lite's interpreter for ``model.tflite``): each
:class:`Signature` carries a :data:`Runner`, and Predict, Classify, Regress,
MultiInference, warmup and batching all go through it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from functions.serving.codecs import tensors
from functions.serving.codecs.specs import TensorSpec
from functions.serving.metrics import ServingMetrics
from functions.serving.runtime.batching import Batcher, BatchingOptions
from loader.errors import (
    Code,
    FailedPrecondition,
    InvalidArgument,
    error_for_code,
)
from loader.versions import VersionId

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"

Arrays = dict[str, npt.NDArray[Any]]
# Called with every input of the signature (names and dtypes checked) and the
# output aliases wanted; returns exactly those outputs. Must be thread-safe.
Runner = Callable[[Mapping[str, npt.NDArray[Any]], tuple[str, ...]], Arrays]


class SignatureNotFound(FailedPrecondition):
    """The servable has no signature by that key (TF Serving's gRPC wording;
    its REST API words and codes this case differently)."""

    def __init__(self, name: str) -> None:
        super().__init__(f'Serving signature key "{name}" not found.')
        self.name = name


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    runner: Runner


@dataclass(frozen=True)
class LoadedModel:
    """What a runtime hands the server for one version."""

    signature_defs: Mapping[str, Any]  # key -> SignatureDef, for GetModelMetadata
    signatures: Mapping[str, Signature]  # the runnable ones
    resource: Any  # keeps the runtime's objects (a Session, interpreters) alive


class Servable:
    """A loaded version. Immutable after construction; safe to share across threads."""

    def __init__(
        self,
        version_id: VersionId,
        path: Path,
        loaded: LoadedModel,
        batching: BatchingOptions | None = None,
        metrics: ServingMetrics | None = None,
    ):
        from tensorflow_serving.apis import get_model_metadata_pb2

        self.version_id = version_id
        self._metrics = metrics or ServingMetrics()
        self.batcher = Batcher(batching, self._metrics) if batching is not None else None
        self.path = path
        self.signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for key, sig_def in loaded.signature_defs.items():
            self.signature_defs.signature_def[key].CopyFrom(sig_def)
        self.signatures: dict[str, Signature] = dict(loaded.signatures)
        self._resource = loaded.resource

    def signature(self, name: str) -> Signature:
        sig = self.signatures.get(name or DEFAULT_SIGNATURE)
        if sig is None:
            raise SignatureNotFound(name or DEFAULT_SIGNATURE)
        return sig

    @staticmethod
    def check_input_names(signature: Signature, names: Iterable[str]) -> None:
        """TF Serving's checks on input aliases, made once per request: before any
        tensor is decoded when the wire format names them (gRPC), else on what
        the decoder returned. Dtypes are :meth:`run`'s to check, by these names."""
        sent = set(names)
        if sent == signature.inputs.keys():
            return
        expected = set(signature.inputs)
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
    ) -> Arrays:
        """Runs ``signature``; returns the outputs named in ``output_filter`` (all if empty).
        Input names are the caller's to check (:meth:`check_input_names`, before
        decoding, as TF Serving orders its checks). ``api`` labels the runtime
        latency metric."""
        _check_dtypes(signature, inputs)
        wanted = _check_output_filter(signature, output_filter)
        if self.batcher is None:
            return self._call(signature, inputs, wanted, api)
        # A batch mixes requests with different filters: run every output.
        every = tuple(sorted(signature.outputs))
        outputs = self.batcher.run(
            signature.name, inputs, lambda batch: self._call(signature, batch, every, api)
        )
        return {k: outputs[k] for k in wanted}

    def _call(
        self,
        signature: Signature,
        inputs: Mapping[str, npt.NDArray[Any]],
        outputs: tuple[str, ...],
        api: str,
    ) -> Arrays:
        import tensorflow as tf

        try:
            with self._metrics.runtime(self.version_id.model, api):
                return signature.runner(inputs, outputs)
        except tf.errors.OpError as err:
            raise error_for_code(Code(err.error_code), tf_error_message(err.message)) from err
        except UnicodeDecodeError as err:  # TF failed to format its own error about the input
            raise InvalidArgument(
                f"signature {signature.name!r} rejected the input (TensorFlow's error message "
                "about it is not valid UTF-8)"
            ) from err
        except (TypeError, ValueError) as err:
            raise InvalidArgument(f"signature {signature.name!r}: {err}") from err


def _check_dtypes(signature: Signature, inputs: Mapping[str, npt.NDArray[Any]]) -> None:
    """Each input's dtype, by the names the caller checked (a name the signature
    lacks is a caller's bug, not a request's error)."""
    specs = signature.inputs
    for name, array in inputs.items():
        got = tensors.dtype_enum(array.dtype)
        if got != specs[name].dtype:
            raise InvalidArgument(
                f'input "{name}": expects dtype {tensors.dtype_name(specs[name].dtype)} but '
                f"{tensors.dtype_name(got)} was provided"
            )


def tf_error_message(message: str) -> str:
    """TensorFlow's error without what clients must not see: the Python stack of
    where a failing node was defined (eager and tf.function errors) and the
    graph-node annotations (``\t [[{{node mul}}]]``), e.g. "Incompatible
    shapes: [2,2] vs. [3,2]" from "Graph execution error: Detected at node mul ...".
    """
    lines = message.splitlines()
    if lines and lines[0].startswith("Graph execution error"):
        lines = lines[1:]
    kept = [
        line
        for line in lines
        if line.strip()
        and not line.startswith(("Detected at node", " ", "\t", "<stack traces unavailable>"))
    ]
    return "; ".join(kept) or message


def _check_output_filter(signature: Signature, output_filter: Iterable[str]) -> tuple[str, ...]:
    """The aliases to fetch, in a stable order (the runner caches per selection)."""
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
    return tuple(sorted(wanted or signature.outputs))
