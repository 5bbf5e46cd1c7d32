"""The Open Inference Protocol's gRPC service, ``inference.GRPCInferenceService``
(``protos/inference/grpc_service.proto``, Triton's definition), over
:class:`V2Api` on the ``grpc.aio`` server of the gRPC port.

Every RPC of the proto is registered here, by the proto's own method list,
with the message classes of our generated module (no ``*_pb2_grpc``: protoc's
servicer module imports its messages by the proto's path, not our package).
Errors are the error tree's, mapped by ``grpc_errors``. As in TF Serving's
adapter, ModelInfer is counted and timed per request and runs through
``run`` (inline on the loop, or on the executor); the health and metadata
RPCs answer inline; RepositoryModelLoad and Unload block until the models
are loaded or unloaded, so they are synchronous handlers, which the server
runs on its executor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from functions.serving.api.grpc_errors import async_rpc_errors, rpc_errors
from functions.serving.api.v2 import grpc_codec
from functions.serving.api.v2.inference import ENTRYPOINT_GRPC, METRICS_API, V2Api
from functions.serving.api.v2.proto.inference import grpc_service_pb2 as pb
from functions.serving.metrics import ServingMetrics

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
T = TypeVar("T")
R = TypeVar("R")  # a repository RPC's (empty) response
# How a handler runs a blocking call (grpc_server.off_loop).
Run = Callable[[Callable[[], T]], Awaitable[T]]
AioContext = grpc.aio.ServicerContext[Any, Any]


class InferenceService:
    """The handlers, named as the proto's RPCs."""

    def __init__(self, api: V2Api, metrics: ServingMetrics, run: Run[Any]) -> None:
        self._api = api
        self._metrics = metrics
        self._run = run

    @async_rpc_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: AioContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._api.live())

    @async_rpc_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: AioContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._api.ready())

    @async_rpc_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: AioContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._api.model_ready(request.name, request.version))

    @async_rpc_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: AioContext
    ) -> pb.ServerMetadataResponse:
        return grpc_codec.server_metadata(self._api.server_metadata())

    @async_rpc_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: AioContext
    ) -> pb.ModelMetadataResponse:
        return grpc_codec.model_metadata(self._api.model_metadata(request.name, request.version))

    @async_rpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: AioContext
    ) -> pb.ModelInferResponse:
        # Decoding runs inside the request's timing and ``run``: a bad tensor
        # is counted with its code, and large ones decode off the loop.
        with self._metrics.request(request.model_name, METRICS_API, ENTRYPOINT_GRPC):
            response: pb.ModelInferResponse = await self._run(lambda: self._infer(request))
            return response

    def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        return grpc_codec.infer_response(self._api.infer(grpc_codec.infer_request(request)))

    @async_rpc_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: AioContext
    ) -> pb.RepositoryIndexResponse:
        grpc_codec.check_repository(request.repository_name)
        return grpc_codec.repository_index(self._api.repository_index(request.ready))

    @rpc_errors
    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        return self._change(self._api.load, request, pb.RepositoryModelLoadResponse)

    @rpc_errors
    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        return self._change(self._api.unload, request, pb.RepositoryModelUnloadResponse)

    @staticmethod
    def _change(
        change: Callable[[str, Mapping[str, Any]], None],
        request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest,
        response: Callable[[], R],
    ) -> R:
        """Loads or unloads ``request.model_name`` with ``change`` (blocking
        until done), then answers with an empty ``response``."""
        grpc_codec.check_repository(request.repository_name)
        change(request.model_name, grpc_codec.parameters(request.parameters))
        return response()


def method_handlers(service: InferenceService) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """A unary handler for every RPC of the proto's service (AttributeError
    for one the servicer lacks: the proto and this module change together)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in SERVICE.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(service, method.name),
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )
    return handlers


def add_services(
    server: grpc.aio.Server, api: V2Api, metrics: ServingMetrics, run: Run[Any]
) -> None:
    handlers = method_handlers(InferenceService(api, metrics, run))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
