"""Helpers shared by the integration tests that drive a real `rollway serve`
through TF Serving's gRPC API: retrying checks, a small client, and builders of
ModelServerConfig messages and files."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from functions.serving.process import ServerProcess

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0) -> T:
    """Calls ``check`` until it stops failing (assertion or RPC error), or re-raises."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        threading.Event().wait(0.05)


def predict_request(
    model: str, version: int | None = None, label: str | None = None
) -> predict_pb2.PredictRequest:
    """A PredictRequest for ``model``, at ``version`` or ``label`` when given; no inputs."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    return request


class Client:
    """PredictionService and ModelService stubs on one channel to ``server``."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.address)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(
        self, model: str, x: float, version: int | None = None, label: str | None = None
    ) -> tuple[int, float]:
        """(version that answered, y) for the one-element batch [[x]]."""
        request = predict_request(model, version, label)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[x]], dtype=np.float32)))
        response = self.predictions.Predict(request, timeout=10)
        assert response.model_spec.name == model
        y = tf.make_ndarray(response.outputs["y"]).ravel()
        return response.model_spec.version.value, float(y[0])

    def status_list(self, model: str, version: int | None = None) -> list[Any]:
        """GetModelStatus's ModelVersionStatus list, as the server orders it."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        return list(self.models.GetModelStatus(request, timeout=10).model_version_status)

    def statuses(self, model: str) -> dict[int, Any]:
        """Every version's ModelVersionStatus, by version."""
        return {s.version: s for s in self.status_list(model)}

    def states(self, model: str) -> dict[int, int]:
        """Every version's state (AVAILABLE, END, ...), by version."""
        return {s.version: s.state for s in self.status_list(model)}

    def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """HandleReloadConfigRequest with ``config``; raises grpc.RpcError on failure."""
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        self.models.HandleReloadConfigRequest(request, timeout=60)

    def close(self) -> None:
        """Closes the channel."""
        self.channel.close()


def model_config(
    name: str, base_path: Path, policy: str = "", labels: dict[str, int] | None = None
) -> model_server_config_pb2.ModelConfig:
    """A TensorFlow ModelConfig; ``policy`` is a ModelVersionPolicy in text format."""
    config = model_server_config_pb2.ModelConfig(
        name=name, base_path=str(base_path), model_platform="tensorflow"
    )
    if policy:
        text_format.Parse(policy, config.model_version_policy)
    for label, version in (labels or {}).items():
        config.version_labels[label] = version
    return config


def server_config(
    *models: model_server_config_pb2.ModelConfig,
) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig whose model_config_list holds ``models``."""
    message = model_server_config_pb2.ModelServerConfig()
    message.model_config_list.config.extend(models)
    return message


def write_config(path: Path, config: model_server_config_pb2.ModelServerConfig) -> Path:
    """Writes ``config`` in text format, replacing ``path`` atomically so a poller
    never reads half a file; returns ``path``."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text_format.MessageToString(config))
    os.replace(staging, path)
    return path


def wait_for_file(path: Path, timeout: float = 60.0) -> None:
    """Until ``path`` exists (a gate model's call wrote ``<gate>.started``, say)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def wait_refused(port: int, timeout: float = 60.0) -> None:
    """Until ``port`` on loopback no longer accepts connections (a drain began)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        except OSError:
            return
        time.sleep(0.02)
    raise AssertionError(f"port {port} still accepts connections")
