"""Pure helpers of functions/serving/servable.py."""

from __future__ import annotations

from typing import Any

import pytest

from functions.serving.runtime.servable import tf_error_message


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "Graph execution error:\n\nDetected at node mul defined at (most recent call last):\n"
            "<stack traces unavailable>\nIncompatible shapes: [2,2] vs. [3,2]\n"
            "\t [[{{node mul}}]] [Op:__inference_signature_wrapper_add_mul_353]",
            "Incompatible shapes: [2,2] vs. [3,2]",
        ),
        (
            "Graph execution error:\n\nDetected at node ParseExample/ParseExample defined at (most"
            ' recent call last):\n  File "/srv/x.py", line 2, in <module>\n    f()\n\nCould not'
            " parse example input, value: 'garbage'\n\t [[{{node ParseExample/ParseExample}}]]",
            "Could not parse example input, value: 'garbage'",
        ),
        ("plain message", "plain message"),
    ],
)
def test_tensorflow_errors_lose_the_server_stack(raw: str, clean: str) -> None:
    assert tf_error_message(raw) == clean


def _signature(*names: str) -> Any:
    from functions.serving.codecs.specs import TensorSpec
    from functions.serving.runtime.servable import Signature

    return Signature("s", "m", {n: TensorSpec(1, None) for n in names}, {}, lambda i, o: {})


@pytest.mark.parametrize("sent", [["x"], ("x",), {"x": 1}.keys()])
def test_matching_input_names_pass(sent: Any) -> None:
    from functions.serving.runtime.servable import Servable

    Servable.check_input_names(_signature("x"), sent)


@pytest.mark.parametrize(
    ("expected", "sent", "message"),
    [
        (["x"], ["x", "z"], "input size does not match signature: 2!=1 len({x,z}) != len({x}). "
         "Sent extra: {z}. Missing but required: {}."),
        (["a", "b"], ["a"], "input size does not match signature: 1!=2 len({a}) != len({a,b}). "
         "Sent extra: {}. Missing but required: {b}."),
        (["x"], ["z"], "input tensor alias not found in signature: z. Inputs expected to be in "
         "the set {x}."),
    ],
)  # fmt: skip
def test_input_name_errors_are_tf_servings(
    expected: list[str], sent: list[str], message: str
) -> None:
    from functions.serving.runtime.servable import Servable
    from loader.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as info:
        Servable.check_input_names(_signature(*expected), sent)
    assert info.value.message == message
