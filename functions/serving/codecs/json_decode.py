""":predict request bodies in TF Serving's REST JSON, decoded to numpy arrays.

Follows FillPredictRequestFromJson in ``tensorflow_serving/util/json_tensor.cc``,
error texts included. :func:`parse_predict_body` reads the body's shape (row
``instances`` or columnar ``inputs``); :func:`decode_inputs` then types its
values by the signature's :class:`TensorSpec` map (each value as
:mod:`json_tensor` converts it) and stacks row-format instances into one batch.
Every failure is an :class:`InvalidArgument`, or :class:`Unimplemented` for a
DataType JSON cannot carry; an error in one instance names its index. Errors
quote at most ``json_text.QUOTE_BYTES`` of the body.

What a body can make the server allocate is bounded by its size without a
``tensors.Budget``: JSON has no broadcasting, so every element decoded is
written out in the body (two bytes at least, with its separator), and costs
a few tens of bytes decoded (a parsed Python value, its array slot, a tstring):
within the budget's ``AMPLIFICATION`` times the body.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.serving.codecs import json_tensor
from functions.serving.codecs.json_text import clip, value_to_string
from functions.serving.codecs.json_values import (
    check_object,
    is_b64,
    nonempty_array,
    signature_name,
)
from functions.serving.codecs.specs import TensorSpec
from loader.errors import InvalidArgument, RollwayError

_INSTANCES, _INPUTS = "instances", "inputs"


class JsonFormat(enum.Enum):
    ROW = "row"  # {"instances": [...]} in, {"predictions": [...]} out
    COLUMNAR = "columnar"  # {"inputs": ...} in, {"outputs": ...} out


@dataclass(frozen=True)
class PredictBody:
    signature_name: str  # "" if absent
    format: JsonFormat
    payload: Any  # the raw "instances" or "inputs" JSON value


def parse_predict_body(body: Any) -> PredictBody:
    """The signature name and the row ("instances") or columnar ("inputs") payload."""
    doc = check_object(body)
    name = signature_name(doc)
    if _INSTANCES in doc and _INPUTS in doc:
        raise InvalidArgument(
            f"JSON Value: {value_to_string(doc)} Not formatted correctly expecting only one "
            "of 'inputs' or 'instances' keys to exist "
        )
    if _INSTANCES in doc:
        instances = nonempty_array(
            doc,
            _INSTANCES,
            "Excepting 'instances' to be an list/array",
            "No values in 'instances' array",
        )
        return PredictBody(name, JsonFormat.ROW, instances)
    if _INPUTS in doc:
        return PredictBody(name, JsonFormat.COLUMNAR, doc[_INPUTS])
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def decode_inputs(predict: PredictBody, inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """The request's tensors, typed by the signature's inputs."""
    if not inputs:
        raise InvalidArgument(
            f"Failed to get input map for signature: {predict.signature_name or 'DEFAULT'}"
        )
    if predict.format is JsonFormat.ROW:
        return _from_instances(predict.payload, inputs)
    return _from_columnar(predict.payload, inputs)


# --------------------------------------------------------------------------
# Row ("instances") and columnar ("inputs") payloads


def _error_text(err: RollwayError) -> str:
    """absl::Status::ToString(), as TF Serving embeds a nested error."""
    return f"{err.code.name}: {err.message}"


def _shape_string(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64(value)


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
            raise InvalidArgument(f"JSON object: does not have named input: {clip(name)}")
        shape, values = json_tensor.values(item, spec.dtype)
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
                        f"Failed to process element: {index} key: {clip(name)} of 'instances' "
                        f"list. Error: {_error_text(err)}"
                    ) from err
            if set(element) != set(names):
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{value_to_string(element)} keys must be equal to: {','.join(names)}"
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
        name: json_tensor.array(
            batch.values, [len(instances), *batch.shape], inputs[name].dtype, f'input "{name}"'
        )
        for name, batch in batches.items()
    }


def _from_columnar(value: Any, inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or is_b64(value):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name, spec = next(iter(inputs.items()))
        shape, values = json_tensor.values(value, spec.dtype)
        return {name: json_tensor.array(values, shape, spec.dtype, f'input "{name}"')}
    result: dict[str, np.ndarray] = {}
    # As TF Serving: keys that name no input are ignored.
    for name in sorted(inputs):
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        dtype = inputs[name].dtype
        shape, values = json_tensor.values(value[name], dtype)
        result[name] = json_tensor.array(values, shape, dtype, f'input "{name}"')
    return result
