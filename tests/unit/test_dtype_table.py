"""The codecs' DataType table is types.proto's, checked against TensorFlow's own.

``functions.serving.codecs.tensors`` writes the numbers out so that importing
the codecs does not load all of TensorFlow (any ``tensorflow.core`` module
imports the ``tensorflow`` package); this test is what keeps them true.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from functions.serving.codecs import tensors


def test_every_carried_dtype_has_types_protos_number_and_tensorflows_numpy_type() -> None:
    for enum, dtype in tensors.BY_ENUM.items():
        assert types_pb2.DataType.Name(enum) == dtype.name
        numpy_type = tf.dtypes.as_dtype(enum).as_numpy_dtype
        expected = np.dtype(object) if enum == types_pb2.DT_STRING else np.dtype(numpy_type)
        assert dtype.numpy == expected, dtype.name


def test_every_base_data_type_has_its_name() -> None:
    for value in types_pb2.DataType.DESCRIPTOR.values:
        if value.number < 100:  # the _REF types are graph-internal
            assert tensors.dtype_name(value.number) == value.name
    assert tensors.dtype_name(1000) == "DataType(1000)"
