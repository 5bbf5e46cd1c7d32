"""Message classes for TF Serving config files whose classes
``tensorflow-serving-api`` does not ship (its wheel has ModelServerConfig but
not SSLConfig, MonitoringConfig or BatchingParameters).

Users keep their files, so the text format must be TF Serving's: the
descriptor below declares the same package, message and field names and
numbers as ``tensorflow_serving/config/ssl_config.proto`` and
``monitoring_config.proto``, and ``BatchingParameters`` (fields 1-9, up to
``enable_large_batch_splitting`` and ``max_execution_batch_size``) from
``servables/tensorflow/session_bundle_config.proto``. It is built at run
time in a private descriptor pool, so nothing is generated or vendored, and it
can never clash with a class a future ``tensorflow-serving-api`` ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    wrappers_pb2,
)

from loader.errors import ConfigError
from loader.model_config import parse_text_proto

_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_BOOL = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_INT64 = descriptor_pb2.FieldDescriptorProto.TYPE_INT64


def _build_pool() -> descriptor_pool.DescriptorPool:
    file = descriptor_pb2.FileDescriptorProto(
        name="rollway/tf_serving_compat/config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    ssl = file.message_type.add(name="SSLConfig")
    for number, (name, kind) in enumerate(
        (("server_key", _STRING), ("server_cert", _STRING), ("custom_ca", _STRING),
         ("client_verify", _BOOL)),
        start=1,
    ):  # fmt: skip
        ssl.field.add(name=name, number=number, type=kind, label=1)  # LABEL_OPTIONAL
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=_BOOL, label=1)
    prometheus.field.add(name="path", number=2, type=_STRING, label=1)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config", number=1, type=_MESSAGE, label=1,
        type_name=".tensorflow.serving.PrometheusConfig",
    )  # fmt: skip
    batching = file.message_type.add(name="BatchingParameters")
    for number, (name, wrapper) in enumerate(
        (("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
         ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
         ("thread_pool_name", "StringValue")),
        start=1,
    ):  # fmt: skip
        batching.field.add(
            name=name, number=number, type=_MESSAGE, label=1,
            type_name=f".google.protobuf.{wrapper}",
        )  # fmt: skip
    batching.field.add(name="allowed_batch_sizes", number=6, type=_INT64, label=3)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=_BOOL, label=1)
    for number, (name, wrapper) in enumerate(
        (("enable_large_batch_splitting", "BoolValue"), ("max_execution_batch_size", "Int64Value")),
        start=8,
    ):
        batching.field.add(
            name=name, number=number, type=_MESSAGE, label=1,
            type_name=f".google.protobuf.{wrapper}",
        )  # fmt: skip
    file.dependency.append(wrappers_pb2.DESCRIPTOR.name)
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(wrappers)
    pool.Add(file)
    return pool


_POOL = _build_pool()


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(
        _POOL.FindMessageTypeByName(f"tensorflow.serving.{name}")
    )


SSLConfig: Any = _message("SSLConfig")
MonitoringConfig: Any = _message("MonitoringConfig")
BatchingParameters: Any = _message("BatchingParameters")


def read_text_proto(path: str, message_class: Any) -> Any:
    """Parses a text-format config file; a ConfigError names the file and the
    problem in TF Serving's words (see ``loader.model_config.parse_text_proto``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path!r}: {err}") from err
    message = message_class()
    parse_text_proto(text, message, path)
    return message
