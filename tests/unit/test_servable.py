"""Pure helpers of functions/serving/servable.py."""

from __future__ import annotations

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
