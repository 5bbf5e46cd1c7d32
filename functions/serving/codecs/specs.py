"""The types a codec is handed for a signature's tensors.

A codec never sees a servable: the data plane passes it the signature's
:class:`TensorSpec` map, as TF Serving's JSON codec is handed a type map.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.serving.codecs.tensors import dtype_name


@dataclass(frozen=True)
class TensorSpec:
    dtype: int  # TensorFlow DataType enum value
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension

    def describe(self) -> str:
        dims = "?" if self.shape is None else str(list(self.shape))
        return f"{dtype_name(self.dtype)} {dims}"
