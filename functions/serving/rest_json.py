"""TensorFlow Serving's REST JSON formats, without the HTTP.

Follows ``tensorflow_serving/util/json_tensor.cc`` (FillPredictRequestFromJson,
MakeJsonFromTensors, FillClassificationRequestFromJson and the result writers)
including its error messages, so clients that match on TF Serving's texts keep
working. Notes on how TF Serving's rapidjson document model maps onto Python's
``json`` values:

* A JSON integer is an integer only when it fits int64 or uint64; a larger one
  is a double, as rapidjson parses it. ``1.0`` is a double, ``1`` an integer:
  ``DT_INT32`` rejects ``1.0`` and a tf.Example feature becomes ``float_list``
  or ``int64_list`` by that distinction, value by value.
* Floats are written as TF Serving's ``WriteDecimal`` writes them: six
  significant digits (``printf("%g")``) when that round-trips to the same
  float32/float64, else ``max_digits10`` digits, with ``.0`` appended to a
  whole number that is not in exponent notation; ``NaN``, ``Infinity`` and
  ``-Infinity`` for non-finite values. :class:`JsonFloat` carries that text to
  :func:`dumps`.
* DT_STRING outputs are written as TF Serving writes them: raw bytes in a JSON
  string (not checked for UTF-8), or ``{"b64": ...}`` when the output's name
  ends in ``_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.serving import tensors
from functions.serving.servable import TensorSpec
from loader.errors import InvalidArgument, RollwayError, Unimplemented

_INSTANCES, _INPUTS, _SIGNATURE = "instances", "inputs", "signature_name"
_CONTEXT, _EXAMPLES = "context", "examples"
_B64 = "b64"
_BYTES_SUFFIX = "_bytes"

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_INT32_MIN, _INT32_MAX, _UINT32_MAX = -(2**31), 2**31 - 1, 2**32 - 1
_FLT_MAX = float(np.finfo(np.float32).max)
_FLOAT_MAX_INT = 2**24 - 1  # largest integer TF Serving accepts for DT_FLOAT
_DOUBLE_MAX_INT = 2**53 - 1  # ... and for DT_DOUBLE

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 19, 22, 23


class JsonFormat(enum.Enum):
    ROW = "row"  # {"instances": [...]} in, {"predictions": [...]} out
    COLUMNAR = "columnar"  # {"inputs": ...} in, {"outputs": ...} out


@dataclass(frozen=True)
class PredictBody:
    signature_name: str  # "" if absent
    format: JsonFormat
    payload: Any  # the raw "instances" or "inputs" JSON value


class JsonFloat(float):
    """A float with the exact text TF Serving writes for it (see :func:`dumps`).

    Its value is that text parsed as a double, so ``JsonFloat`` from float32
    0.1 equals ``0.1``.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonFloat:
        value = float(text.replace("Infinity", "inf"))
        obj = super().__new__(cls, value)
        obj.text = text
        return obj


# --------------------------------------------------------------------------
# Parsing


_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def _parse_int(text: str) -> int | float:
    value = int(text)
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    return _parse_float(text)  # rapidjson stores a larger integer as a double


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double.")
    return value


def parse_json(body: bytes) -> Any:
    """Parses a request body as TF Serving does (NaN and +/-Infinity allowed);
    the top level must be an object."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidArgument(
            f"JSON Parse error: Invalid encoding in string (the body is not valid UTF-8) "
            f"at offset: {err.start}"
        ) from err
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InvalidArgument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    try:
        doc = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as err:
        message = next(
            (text for prefix, text in _RAPIDJSON_MESSAGES.items() if err.msg.startswith(prefix)),
            err.msg,
        )
        if err.msg.startswith("Expecting ',' delimiter"):
            message = "Missing a comma or ']' after an array element or '}' after an object member."
        offset = len(text[: err.pos].encode("utf-8", "surrogatepass"))
        raise InvalidArgument(f"JSON Parse error: {message} at offset: {offset}") from err
    except ValueError as err:  # a number out of range
        raise InvalidArgument(f"JSON Parse error: {err}") from err
    except RecursionError as err:
        raise InvalidArgument("JSON Parse error: the document is nested too deeply") from err
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {_value_to_string(doc)} Is not object")
    return doc


def _check_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument(f"JSON Value: {_value_to_string(body)} Is not object")
    return body


def _signature_name(doc: dict[str, Any]) -> str:
    name = doc.get(_SIGNATURE, "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def parse_predict_body(body: Any) -> PredictBody:
    """The signature name and the row ("instances") or columnar ("inputs") payload."""
    doc = _check_object(body)
    signature_name = _signature_name(doc)
    if _INSTANCES in doc and _INPUTS in doc:
        raise InvalidArgument(
            f"JSON Value: {_value_to_string(doc)} Not formatted correctly expecting only one "
            "of 'inputs' or 'instances' keys to exist "
        )
    if _INSTANCES in doc:
        instances = doc[_INSTANCES]
        if not isinstance(instances, list):
            raise InvalidArgument(
                f"JSON Value: {_value_to_string(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise InvalidArgument(
                f"JSON Value: {_value_to_string(doc)} No values in 'instances' array"
            )
        return PredictBody(signature_name, JsonFormat.ROW, instances)
    if _INPUTS in doc:
        return PredictBody(signature_name, JsonFormat.COLUMNAR, doc[_INPUTS])
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------
# JSON values in error messages (TF Serving's JsonValueToString)


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _value_to_string(value: Any) -> str:
    """rapidjson's PrettyWriter output (4-space indents); a lone double is written
    as a float when it is in float range, as TF Serving does."""
    if type(value) is float:
        if -_FLT_MAX <= value <= _FLT_MAX:
            return _format_float32(value)
        return _format_double(value)
    return json.dumps(value, indent=4, ensure_ascii=False)


def _dtype_string(dtype: int) -> str:
    """TensorFlow's DataTypeString: "float", "int32", "string", ..."""
    name = tensors.dtype_name(dtype)
    return name[3:].lower() if name.startswith("DT_") else name


# --------------------------------------------------------------------------
# Request tensors


def _type_error(value: Any, dtype: int) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {_value_to_string(value)} Type: {_json_type(value)} is not of expected "
        f"type: {_dtype_string(dtype)}"
    )


def _lossy(value: Any, target: str) -> InvalidArgument:
    return InvalidArgument(
        f"Cannot convert JSON value: {_value_to_string(value)} to {target} without loss of "
        "precision."
    )


def _to_float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        if -_FLT_MAX <= value <= _FLT_MAX or not math.isfinite(value):
            return value
        raise _lossy(value, "float")
    if kind is int:
        if abs(value) <= _FLOAT_MAX_INT:
            return value
        raise _lossy(value, "float")
    raise _type_error(value, DT_FLOAT)


def _to_double(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        if abs(value) <= _DOUBLE_MAX_INT:
            return value
        raise _lossy(value, "double")
    raise _type_error(value, DT_DOUBLE)


def _int_converter(dtype: int, low: int, high: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is int and low <= value <= high:
            return value
        raise _type_error(value, dtype)

    return convert


def _to_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise _type_error(value, DT_BOOL)


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise _type_error(value, DT_STRING)


_CONVERTERS: dict[int, Callable[[Any], Any]] = {
    DT_FLOAT: _to_float,
    DT_DOUBLE: _to_double,
    # TF Serving takes any int32 for the narrower types and lets TensorFlow wrap
    # it; rollway rejects a value the type cannot hold, as for gRPC requests.
    DT_INT32: _int_converter(DT_INT32, _INT32_MIN, _INT32_MAX),
    DT_INT16: _int_converter(DT_INT16, -(2**15), 2**15 - 1),
    DT_INT8: _int_converter(DT_INT8, -(2**7), 2**7 - 1),
    DT_UINT8: _int_converter(DT_UINT8, 0, 2**8 - 1),
    DT_INT64: _int_converter(DT_INT64, _INT64_MIN, _INT64_MAX),
    DT_UINT32: _int_converter(DT_UINT32, 0, _UINT32_MAX),
    DT_UINT64: _int_converter(DT_UINT64, 0, _UINT64_MAX),
    DT_BOOL: _to_bool,
    DT_STRING: _to_string,
}


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64(value):
        raise InvalidArgument(
            f"JSON Value: {_value_to_string(value)} not formatted correctly for base64 data"
        )
    text: str = value[_B64]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidArgument("Unable to base64 decode") from err


def _dense_shape(value: Any) -> list[int]:
    """The shape read off the first element at each level, as TF Serving does."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _shape_string(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list[Any]) -> None:
    """TF Serving's FillTensorProto: checks that ``value`` is dense with ``shape``
    and appends its converted values to ``out`` in row-major order."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {_value_to_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_convert(value, dtype))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    if level == rank - 1 and not any(isinstance(v, list) for v in value):
        convert = _CONVERTERS.get(dtype)
        if convert is not None and dtype != DT_STRING:
            out.extend(map(convert, value))  # a dict is a type error here too
        else:
            out.extend(_convert(v, dtype) for v in value)
        return
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _convert(value: Any, dtype: int) -> Any:
    if isinstance(value, dict):
        if dtype == DT_STRING:
            return _decode_b64(value)
        raise _type_error(value, dtype)
    convert = _CONVERTERS.get(dtype)
    if convert is None:
        raise Unimplemented(
            f"Conversion of JSON Value: {_value_to_string(value)} to type: {_dtype_string(dtype)}"
        )
    return convert(value)


def _values(value: Any, dtype: int) -> tuple[list[int], list[Any]]:
    shape = _dense_shape(value)
    if len(shape) > tensors.MAX_RANK:
        raise InvalidArgument(
            f"JSON value has {len(shape)} dimensions; rollway accepts at most {tensors.MAX_RANK}"
        )
    out: list[Any] = []
    _fill(value, 0, shape, dtype, out)
    return shape, out


def _array(values: list[Any], shape: list[int], dtype: int) -> npt.NDArray[Any]:
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=tensors.BY_ENUM[dtype].numpy).reshape(shape)


def _error_text(err: RollwayError) -> str:
    """absl::Status::ToString(), as TF Serving embeds a nested error."""
    return f"{err.code.name}: {err.message}"


def decode_inputs(predict: PredictBody, inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """The request's tensors, typed by the signature's inputs."""
    if not inputs:
        raise InvalidArgument(
            f"Failed to get input map for signature: {predict.signature_name or 'DEFAULT'}"
        )
    if predict.format is JsonFormat.ROW:
        return _from_instances(predict.payload, inputs)
    return _from_columnar(predict.payload, inputs)


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


@dataclass
class _Batch:
    shape: list[int]
    size: int
    values: list[Any]


def _from_instances(instances: Any, inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InvalidArgument("Excepting 'instances' to be a non-empty list/array")
    if not isinstance(instances[0], dict) and len(inputs) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    objects = _is_element_object(instances[0])
    names = sorted(inputs)
    batches: dict[str, _Batch] = {}

    def add(item: Any, name: str) -> None:
        spec = inputs.get(name)
        if spec is None:
            raise InvalidArgument(f"JSON object: does not have named input: {name}")
        shape, values = _values(item, spec.dtype)
        batch = batches.get(name)
        if batch is None:
            batches[name] = _Batch(shape, len(values), values)
        elif batch.size != len(values):
            raise InvalidArgument(f"Expecting tensor size: {batch.size} but got: {len(values)}")
        elif batch.shape != shape:
            raise InvalidArgument(
                f"Expecting shape {_shape_string(batch.shape)} but got: {_shape_string(shape)}"
            )
        else:
            batch.values.extend(values)

    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise InvalidArgument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, item in element.items():
                try:
                    add(item, name)
                except RollwayError as err:
                    raise InvalidArgument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_error_text(err)}"
                    ) from err
            if set(element) != set(names):
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_value_to_string(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_element_object(element):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add(element, next(iter(inputs)))
            except RollwayError as err:
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {_error_text(err)}"
                ) from err
    return {
        name: _array(batch.values, [len(instances), *batch.shape], inputs[name].dtype)
        for name, batch in batches.items()
    }


def _from_columnar(value: Any, inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name, spec = next(iter(inputs.items()))
        shape, values = _values(value, spec.dtype)
        return {name: _array(values, shape, spec.dtype)}
    result: dict[str, np.ndarray] = {}
    # As TF Serving: keys that name no input are ignored.
    for name in sorted(inputs):
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        dtype = inputs[name].dtype
        shape, values = _values(value[name], dtype)
        result[name] = _array(values, shape, dtype)
    return result


# --------------------------------------------------------------------------
# Floats as TF Serving writes them (WriteDecimal)


def _finish(text: str) -> str:
    if "." not in text and "e" not in text:
        return text + ".0"
    return text


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def _format_float32(value: float) -> str:
    """``value`` (a float32 widened to a double) as TF Serving writes a float."""
    if not math.isfinite(value):
        return _non_finite(value)
    text = f"{value:.6g}"
    if np.float32(float(text)) != np.float32(value):
        text = f"{value:.9g}"
    return _finish(text)


def _format_double(value: float) -> str:
    if not math.isfinite(value):
        return _non_finite(value)
    text = f"{value:.6g}"
    if float(text) != value:
        text = f"{value:.17g}"
    return _finish(text)


def _float_texts(flat: npt.NDArray[Any]) -> list[JsonFloat]:
    """WriteDecimal for every element of a 1-D float32/float64 array."""
    values: list[float] = flat.tolist()
    short = [f"{v:.6g}" for v in values]
    if not short:
        return []
    parsed = np.array(short, dtype=np.float64)
    wide = flat.dtype == np.float64
    if not wide:
        parsed = parsed.astype(np.float32)
    same = (parsed == flat) | np.isnan(flat)
    digits = 17 if wide else 9
    out: list[JsonFloat] = []
    for value, text, ok in zip(values, short, same.tolist(), strict=True):
        if not math.isfinite(value):
            out.append(JsonFloat(_non_finite(value)))
        else:
            out.append(JsonFloat(_finish(text if ok else f"{value:.{digits}g}")))
    return out


# --------------------------------------------------------------------------
# Responses


# The integer types TF Serving writes (DT_UINT16, for one, it does not).
_INTEGER_OUTPUTS = frozenset(
    np.dtype(t)
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64)
)
_ENUM_BY_NUMPY = {d.numpy: d.enum for d in tensors.BY_ENUM.values()}


def _string_value(value: Any, as_bytes: bool) -> Any:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    if as_bytes:
        return {_B64: base64.b64encode(raw).decode("ascii")}
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
        items = _float_texts(flat)
    elif array.dtype == np.float16:  # TF Serving writes DT_HALF as a float
        items = _float_texts(flat.astype(np.float32))
    elif kind in "OSU":
        as_bytes = name.endswith(_BYTES_SUFFIX)
        items = [_string_value(v, as_bytes) for v in flat.tolist()]
    else:
        if flat.size == 0:
            return np.empty(array.shape).tolist()
        enum_ = _ENUM_BY_NUMPY.get(array.dtype)
        type_name = _dtype_string(enum_) if enum_ is not None else str(array.dtype)
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


def encode_classification(result: Any) -> dict[str, Any]:
    """TF Serving's MakeJsonFromClassificationResult: ``{"results": [[[label, score]]]}``."""
    if not len(result.classifications):
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    return {
        "results": [
            [[entry.label, JsonFloat(_format_float32(entry.score))] for entry in item.classes]
            for item in result.classifications
        ]
    }


def encode_regression(result: Any) -> dict[str, Any]:
    """TF Serving's MakeJsonFromRegressionResult: ``{"results": [value, ...]}``."""
    if not len(result.regressions):
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    return {"results": [JsonFloat(_format_float32(r.value)) for r in result.regressions]}


def dumps(value: Any) -> bytes:
    """Compact JSON of what the encoders return (JsonFloat texts kept verbatim)."""
    parts: list[str] = []
    _write(value, parts.append, ascii_only=False)
    text = "".join(parts)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte: \u-escape strings
        parts = []
        _write(value, parts.append, ascii_only=True)
        return "".join(parts).encode("utf-8", "surrogateescape")


def _write(value: Any, emit: Callable[[str], Any], ascii_only: bool) -> None:
    kind = type(value)
    if kind is JsonFloat:
        emit(value.text)
    elif kind is str:
        emit(json.dumps(value, ensure_ascii=ascii_only))
    elif kind is list or kind is tuple:
        emit("[")
        for index, item in enumerate(value):
            if index:
                emit(",")
            _write(item, emit, ascii_only)
        emit("]")
    elif kind is dict:
        emit("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                emit(",")
            emit(json.dumps(str(key), ensure_ascii=ascii_only))
            emit(":")
            _write(item, emit, ascii_only)
        emit("}")
    elif value is None:
        emit("null")
    elif value is True:
        emit("true")
    elif value is False:
        emit("false")
    elif isinstance(value, int):
        emit(str(int(value)))
    elif isinstance(value, float):
        emit(_format_double(float(value)))
    elif isinstance(value, JsonFloat):
        emit(value.text)
    else:
        raise TypeError(f"cannot write {kind.__name__} as JSON")


# --------------------------------------------------------------------------
# :classify and :regress requests


class _Feature:
    """A tf.train.Feature being built; ``kind`` is None until its first value."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind: str | None = None
        self.values: list[Any] = []

    def expect(self, kind: str) -> None:
        if self.kind is not None and self.kind != kind:
            raise InvalidArgument(
                f"Unexpected element type in feature: {self.name} expecting type: {self.kind}"
            )

    def add(self, kind: str, value: Any) -> None:
        self.expect(kind)
        self.kind = kind
        self.values.append(value)


def _add_feature_value(value: Any, feature: _Feature) -> None:
    """TF Serving's AddValueToFeature."""
    if isinstance(value, bool):
        feature.add("int64", 1 if value else 0)
    elif isinstance(value, str):
        feature.add("bytes", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, dict) and _is_b64(value):
        feature.expect("bytes")
        feature.add("bytes", _decode_b64(value))
    elif isinstance(value, float):
        feature.expect("float")
        if math.isfinite(value) and not -_FLT_MAX <= value <= _FLT_MAX:
            raise _lossy(value, "float")
        feature.add("float", value)
    elif isinstance(value, int):
        feature.expect("int64")
        if value > _INT64_MAX:
            raise InvalidArgument(
                f"Feature: {feature.name} has uint64 element. Only int64 is supported."
            )
        feature.add("int64", value)
    else:
        raise InvalidArgument(
            f"Feature: {feature.name} has element with unexpected JSON type: {_json_type(value)}"
        )


def _fill_example(value: Any, example: Any) -> None:
    """TF Serving's MakeExampleFromJsonObject."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = _Feature(name)
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, feature)
        proto = example.features.feature[name]
        proto.Clear()
        if feature.kind == "bytes":
            proto.bytes_list.value.extend(feature.values)
        elif feature.kind == "float":
            proto.float_list.value.extend(feature.values)
        elif feature.kind == "int64":
            proto.int64_list.value.extend(feature.values)


def parse_examples_body(body: Any) -> tuple[str, Any]:
    """A :classify or :regress body as (signature_name, tensorflow.serving.Input)."""
    from tensorflow_serving.apis import input_pb2

    doc = _check_object(body)
    signature_name = _signature_name(doc)
    request_input = input_pb2.Input()
    has_context = _CONTEXT in doc
    if has_context:
        _fill_example(doc[_CONTEXT], request_input.example_list_with_context.context)
    if _EXAMPLES not in doc:
        raise InvalidArgument(
            f"JSON Value: {_value_to_string(doc)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    examples = doc[_EXAMPLES]
    if not isinstance(examples, list):
        raise InvalidArgument(
            f"JSON Value: {_value_to_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise InvalidArgument(
            f"JSON Value: {_value_to_string(doc)} 'examples' value is an empty array"
        )
    listed = request_input.example_list_with_context if has_context else request_input.example_list
    for example in examples:
        _fill_example(example, listed.examples.add())
    return signature_name, request_input
