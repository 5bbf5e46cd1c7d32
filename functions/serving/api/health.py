"""Model-aware grpc.health.v1: SERVING only when every configured model has an
AVAILABLE version. The overall service ("") and TF Serving's two service names
all report the same status.

The servicer is grpc_health's asyncio one, on the gRPC server's loop;
:meth:`ModelHealth.refresh` may be called from any thread (the manager calls
it on every version state change) and hands the change to that loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from functions.serving.api.grpc_server import GrpcServer

SERVICE_NAMES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ModelHealth:
    def __init__(self, is_ready: Callable[[], bool]) -> None:
        """``is_ready`` is first called on :meth:`refresh`, not here."""
        self._is_ready = is_ready
        self._servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # not in the stubs
        self._server: GrpcServer | None = None
        self._lock = threading.Lock()
        self._serving = False
        self._draining = False

    @property
    def serving(self) -> bool:
        return self._serving

    def add_to(self, server: GrpcServer) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server.server)
        with self._lock:
            self._server = server
            server.call(self._set_all(SERVING if self._serving else NOT_SERVING))

    def refresh(self) -> None:
        """Re-evaluates readiness; cheap, called on every version state change."""
        with self._lock:
            serving = self._is_ready() and not self._draining
            if serving is self._serving:
                return
            self._serving = serving
            if self._server is not None:
                self._server.submit(self._set_all(SERVING if serving else NOT_SERVING))

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in SERVICE_NAMES:
            await self._servicer.set(name, status)

    def drain(self) -> None:
        """Reports NOT_SERVING from now on (graceful shutdown); returns once it does."""
        with self._lock:
            self._draining = True
            self._serving = False
        if self._server is not None:
            self._server.call(self._servicer.enter_graceful_shutdown(), timeout=5)
