"""TF Serving's ``Input`` (Classify, Regress, MultiInference) as the one
DT_STRING tensor of serialized tf.Examples a signature is fed.

``example_list``, or ``example_list_with_context`` where each example is
merged over the context exactly as TF Serving does it: by concatenating the
serialized protos, so an example's features override the context's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from loader.errors import InvalidArgument


def serialized_examples(request_input: Any) -> npt.NDArray[Any]:
    """The Input as a [num_examples] DT_STRING array of serialized tf.Examples."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in listed.examples]
    else:
        raise InvalidArgument("Input is empty.")
    if not examples:
        raise InvalidArgument("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array
