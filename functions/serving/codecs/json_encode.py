"""Results as TF Serving's REST JSON: :predict outputs, :classify and :regress.

Follows MakeJsonFromTensors and the result writers in
``tensorflow_serving/util/json_tensor.cc``, error texts included. The encoders
return JSON values for :func:`json_text.dumps`: floats as
:class:`json_text.JsonFloat`, so they are written as TF Serving writes them,
and DT_STRING outputs as TF Serving writes them: raw bytes in a JSON string
(not checked for UTF-8), or ``{"b64": ...}`` when the output's name ends in
``_bytes``. A type TF Serving cannot write (DT_UINT16, complex, ...) is an
:class:`InvalidArgument`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from functions.serving.codecs import tensors
from functions.serving.codecs.json_decode import JsonFormat
from functions.serving.codecs.json_text import JsonFloat, float_texts, format_float32
from functions.serving.codecs.json_values import B64, dtype_string
from loader.errors import InvalidArgument

_BYTES_SUFFIX = "_bytes"

# The integer types TF Serving writes (DT_UINT16, for one, it does not).
_INTEGER_OUTPUTS = frozenset(
    np.dtype(t)
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64)
)
_ENUM_BY_NUMPY = {d.numpy: d.enum for d in tensors.BY_ENUM.values()}


def _string_value(value: Any, as_bytes: bool) -> Any:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    if as_bytes:
        return {B64: base64.b64encode(raw).decode("ascii")}
    # TF Serving writes the bytes as they are, UTF-8 or not; surrogateescape
    # keeps any other byte for dumps() to write back.
    return raw.decode("utf-8", "surrogateescape")


def _nested(array: npt.NDArray[Any], name: str) -> Any:
    """The array as nested lists of JSON values (a scalar for rank 0)."""
    kind = array.dtype.kind
    if array.dtype in _INTEGER_OUTPUTS:
        return array.tolist()
    flat = array.reshape(-1)
    items: list[Any]
    if array.dtype in (np.float32, np.float64):
        items = float_texts(flat)
    elif array.dtype == np.float16:  # TF Serving writes DT_HALF as a float
        items = float_texts(flat.astype(np.float32))
    elif kind in "OSU":
        as_bytes = name.endswith(_BYTES_SUFFIX)
        items = [_string_value(v, as_bytes) for v in flat.tolist()]
    else:
        if flat.size == 0:
            return np.empty(array.shape).tolist()
        enum_ = _ENUM_BY_NUMPY.get(array.dtype)
        type_name = dtype_string(enum_) if enum_ is not None else str(array.dtype)
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {type_name}")
    holder = np.empty(len(items), dtype=object)
    holder[:] = items
    return holder.reshape(array.shape).tolist()


def encode_outputs(outputs: Mapping[str, np.ndarray], fmt: JsonFormat) -> dict[str, Any]:
    """TF Serving's MakeJsonFromTensors: ``{"predictions": ...}`` or ``{"outputs": ...}``."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    if fmt is JsonFormat.COLUMNAR:
        if len(names) == 1:
            return {"outputs": _nested(arrays[names[0]], names[0])}
        return {"outputs": {name: _nested(arrays[name], name) for name in names}}
    batch_size = -1
    for name in names:
        array = arrays[name]
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch_size >= 0 and array.shape[0] != batch_size:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch_size}"
            )
        batch_size = array.shape[0]
    columns = {name: _nested(arrays[name], name) for name in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {
        "predictions": [{name: columns[name][row] for name in names} for row in range(batch_size)]
    }


class LabeledScore(Protocol):
    """One class of one example (the data plane's ``Class``)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...


def encode_classification(result: Sequence[Sequence[LabeledScore]]) -> dict[str, Any]:
    """TF Serving's MakeJsonFromClassificationResult: ``{"results": [[[label, score]]]}``
    from each example's classes."""
    if not result:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    return {
        "results": [
            [[entry.label, JsonFloat(format_float32(entry.score))] for entry in classes]
            for classes in result
        ]
    }


def encode_regression(result: Sequence[float]) -> dict[str, Any]:
    """TF Serving's MakeJsonFromRegressionResult: ``{"results": [value, ...]}``."""
    if not result:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    return {"results": [JsonFloat(format_float32(value)) for value in result]}
