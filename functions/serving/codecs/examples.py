"""TF Serving's ``Input`` (Classify, Regress, MultiInference) as the one
DT_STRING tensor of serialized tf.Examples a signature is fed.

``example_list``, or ``example_list_with_context`` where each example is
merged over the context exactly as TF Serving does it: by concatenating the
serialized protos, so an example's features override the context's.

That merge copies the context into every example: N examples over a context
of C bytes decode to N * C bytes from a request of about N + C. They are
charged to a :class:`~functions.serving.codecs.tensors.Budget` (B: the
serialized context and examples, with each example's tag and length) before
any is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from functions.serving.codecs.tensors import STRING_ELEMENT_BYTES, Budget
from loader.errors import InvalidArgument

WHAT = "Input (serialized tf.Examples)"


def serialized_examples(request_input: Any, budget: Budget | None = None) -> npt.NDArray[Any]:
    """The Input as a [num_examples] DT_STRING array of serialized tf.Examples."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        listed, context = request_input.example_list, b""
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
    else:
        raise InvalidArgument("Input is empty.")
    examples = [e.SerializeToString() for e in listed.examples]
    if not examples:
        raise InvalidArgument("Input is empty.")
    count, own = len(examples), sum(map(len, examples))
    if budget is None:
        budget = Budget(len(context) + own + 2 * count)
    budget.charge(count * (STRING_ELEMENT_BYTES + len(context)) + own, WHAT, [count], "DT_STRING")
    array = np.empty(count, dtype=object)
    array[:] = [context + e for e in examples] if context else examples
    return array
