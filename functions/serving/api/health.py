"""Model-aware grpc.health.v1: SERVING only when every configured model has an
AVAILABLE version. The overall service ("") and TF Serving's two service names
all report the same status."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE_NAMES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


class ModelHealth:
    def __init__(self, is_ready: Callable[[], bool]) -> None:
        """``is_ready`` is first called on :meth:`refresh`, not here."""
        self._is_ready = is_ready
        self._servicer = health.HealthServicer()
        self._serving = False
        self._draining = False
        for name in SERVICE_NAMES:
            self._servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def add_to(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def refresh(self) -> None:
        """Re-evaluates readiness; cheap, called on every version state change."""
        serving = self._is_ready() and not self._draining
        if serving is self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICE_NAMES:
            self._servicer.set(name, status)

    def drain(self) -> None:
        """Reports NOT_SERVING from now on (graceful shutdown)."""
        self._draining = True
        self.refresh()
