"""Predict on one servable, in TF Serving's order of checks.

The order is TF Serving's (predict_util.cc), so the same bad request gets the
same status code: signature, input names (when the wire format names them
before decoding, as gRPC does), tensor decoding with the signature's types,
dtypes, output filter. Warmup runs requests through here too, before the
version is AVAILABLE.
"""

from __future__ import annotations

from collections.abc import Iterable

from functions.serving.dataplane.types import Decode, Prediction, Served
from functions.serving.runtime.servable import Servable


def predict_with(
    servable: Servable,
    signature_name: str,
    decode: Decode,
    names: Iterable[str] | None = None,
    output_filter: Iterable[str] = (),
) -> Prediction:
    """``names``: the input names the request sends, checked before ``decode``
    runs; None when only decoding reveals them (TF Serving's REST JSON)."""
    signature = servable.signature(signature_name)
    if names is not None:
        servable.check_input_names(signature, names)
    arrays = decode(signature.inputs)
    if names is None:
        servable.check_input_names(signature, arrays.keys())
    outputs = servable.run(signature, arrays, output_filter)
    return Prediction(Served(servable.version_id, signature.name), outputs)
