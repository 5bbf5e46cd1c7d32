"""functions.serving.codecs.examples: a tensorflow.serving.Input as serialized
tf.Examples, and the budget on what merging a context can allocate."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest
import tensorflow as tf
from tensorflow_serving.apis import input_pb2

from functions.serving.codecs.examples import serialized_examples
from functions.serving.codecs.tensors import ALLOWANCE, AMPLIFICATION, Budget
from loader.errors import InvalidArgument


def _example(**features: bytes) -> Any:
    proto = tf.train.Example()
    for name, value in features.items():
        proto.features.feature[name].bytes_list.value.append(value)
    return proto


def test_examples_and_context_are_merged_as_tf_serving_merges_them() -> None:
    request = input_pb2.Input()
    listed = request.example_list_with_context
    listed.context.CopyFrom(_example(c=b"ctx"))
    listed.examples.add().CopyFrom(_example(x=b"1"))
    listed.examples.add().CopyFrom(_example(x=b"2", c=b"own"))
    decoded = serialized_examples(request)
    assert decoded.shape == (2,) and decoded.dtype == object
    merged = [tf.train.Example.FromString(value) for value in decoded]
    assert merged[0].features.feature["c"].bytes_list.value == [b"ctx"]
    assert merged[1].features.feature["c"].bytes_list.value == [b"own"]
    plain = input_pb2.Input()
    plain.example_list.examples.add().CopyFrom(_example(x=b"3"))
    assert serialized_examples(plain).tolist() == [_example(x=b"3").SerializeToString()]


@pytest.mark.parametrize("request_input", [input_pb2.Input(), input_pb2.Input(example_list={})])
def test_empty_input(request_input: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"^Input is empty\.$"):
        serialized_examples(request_input)


def test_a_context_copied_into_every_example_is_bounded() -> None:
    """40,000 empty examples over a 16 KiB context: 80 KB asks for 655 MB."""
    request = input_pb2.Input()
    listed = request.example_list_with_context
    listed.context.CopyFrom(_example(c=b"x" * 16384))
    for _ in range(40_000):
        listed.examples.add()
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(InvalidArgument) as info:
            serialized_examples(request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2.0
    assert peak < 16 << 20  # the serialized examples themselves, not their merge
    message = info.value.message
    assert message.startswith("Input (serialized tf.Examples): tensor_shape [40000] of DT_STRING")
    assert f"({AMPLIFICATION} x that + {ALLOWANCE // 2**20} MiB)" in message


def test_a_small_context_over_many_examples_fits() -> None:
    request = input_pb2.Input()
    listed = request.example_list_with_context
    listed.context.CopyFrom(_example(c=b"x" * 100))
    for _ in range(10_000):
        listed.examples.add().CopyFrom(_example(x=b"1"))
    assert serialized_examples(request).shape == (10_000,)


def test_the_request_budget_is_used_when_given() -> None:
    request = input_pb2.Input()
    request.example_list.examples.add().CopyFrom(_example(x=b"1"))
    budget = Budget(0)
    budget.used = budget.limit
    with pytest.raises(InvalidArgument, match="besides the"):
        serialized_examples(request, budget)
