""":classify and :regress request bodies in TF Serving's REST JSON.

Follows FillClassificationRequestFromJson (and its Regression twin) in
``tensorflow_serving/util/json_tensor.cc``, error texts included: a body of
``examples`` (and an optional ``context``) becomes a
``tensorflow.serving.Input``. Each feature's list type is read off its JSON
values, as TF Serving reads it: strings and ``{"b64": ...}`` are
``bytes_list``, doubles (``1.0``) ``float_list``, integers and booleans
``int64_list``; mixing them in one feature, a uint64, or a double outside
float32's range is an :class:`InvalidArgument`.
"""

from __future__ import annotations

import math
from typing import Any

from functions.serving.codecs.json_text import FLT_MAX, INT64_MAX, clip, value_to_string
from functions.serving.codecs.json_values import (
    check_object,
    decode_b64,
    is_b64,
    json_type,
    lossy,
    nonempty_array,
    signature_name,
)
from loader.errors import InvalidArgument

_CONTEXT, _EXAMPLES = "context", "examples"


class _Feature:
    """A tf.train.Feature being built; ``kind`` is None until its first value."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind: str | None = None
        self.values: list[Any] = []

    def expect(self, kind: str) -> None:
        if self.kind is not None and self.kind != kind:
            raise InvalidArgument(
                f"Unexpected element type in feature: {clip(self.name)} expecting type: {self.kind}"
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
    elif isinstance(value, dict) and is_b64(value):
        feature.expect("bytes")
        feature.add("bytes", decode_b64(value))
    elif isinstance(value, float):
        feature.expect("float")
        if math.isfinite(value) and not -FLT_MAX <= value <= FLT_MAX:
            raise lossy(value, "float")
        feature.add("float", value)
    elif isinstance(value, int):
        feature.expect("int64")
        if value > INT64_MAX:
            raise InvalidArgument(
                f"Feature: {clip(feature.name)} has uint64 element. Only int64 is supported."
            )
        feature.add("int64", value)
    else:
        raise InvalidArgument(
            f"Feature: {clip(feature.name)} has element with unexpected JSON type: "
            f"{json_type(value)}"
        )


def _fill_example(value: Any, example: Any) -> None:
    """TF Serving's MakeExampleFromJsonObject."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type(value)}")
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

    doc = check_object(body)
    name = signature_name(doc)
    request_input = input_pb2.Input()
    has_context = _CONTEXT in doc
    if has_context:
        _fill_example(doc[_CONTEXT], request_input.example_list_with_context.context)
    if _EXAMPLES not in doc:
        raise InvalidArgument(
            f"JSON Value: {value_to_string(doc)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    examples = nonempty_array(
        doc,
        _EXAMPLES,
        "Expecting 'examples' value to be an list/array",
        "'examples' value is an empty array",
    )
    listed = request_input.example_list_with_context if has_context else request_input.example_list
    for example in examples:
        _fill_example(example, listed.examples.add())
    return name, request_input
