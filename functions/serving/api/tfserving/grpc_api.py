"""Thin gRPC adapters over the data plane: TF Serving's PredictionService and
ModelService, with the stubs and messages of ``tensorflow-serving-api``.

PredictionService's handlers are ``async def`` for the ``grpc.aio`` server
(``api/grpc_server.py``) and run the data plane through ``run``: inline on
the loop, or on an executor when the runtime needs concurrent calls.
ModelService's handlers stay synchronous (a reload waits for loads), so the
server runs them on its executor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from functions.serving.api.grpc_errors import async_rpc_errors, rpc_errors
from functions.serving.api.tfserving import responses
from functions.serving.api.tfserving.requests import selector_from_proto, tasks_from_proto
from functions.serving.codecs import tensors
from functions.serving.dataplane.examples import CLASSIFY_METHOD
from functions.serving.dataplane.plane import DataPlane
from functions.serving.metrics import ServingMetrics
from loader.errors import FailedPrecondition, InvalidArgument
from loader.model_config import ModelSpec, specs_from_proto

GRPC = "GRPC"  # the request_latency "entrypoint" label

# Replaces the served models' config (ModelService.HandleReloadConfigRequest).
Reload = Callable[[Sequence[ModelSpec]], None]
T = TypeVar("T")
# How a handler runs a blocking data-plane call (grpc_server.off_loop).
Run = Callable[[Callable[[], T]], Awaitable[T]]


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        plane: DataPlane,
        metrics: ServingMetrics,
        run: Run[Any],
        tensor_content: bool = False,
    ) -> None:
        self._plane = plane
        self._metrics = metrics
        self._run = run
        self._as_content = tensor_content

    async def _timed(self, model: str, api: str, call: Callable[[], Any]) -> Any:
        """One request: counted and timed once, whatever it raises."""
        with self._metrics.request(model, api, GRPC):
            return await self._run(call)

    @async_rpc_errors
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._timed(request.model_spec.name, "Predict", lambda: self._predict(request))

    def _predict(self, request: Any) -> Any:
        inputs = request.inputs
        prediction = self._plane.predict(
            selector_from_proto(request),
            lambda specs: tensors.to_ndarrays(inputs),
            inputs.keys(),
            request.output_filter,
        )
        response = predict_pb2.PredictResponse()
        responses.fill_spec(response.model_spec, prediction.served)
        for name, array in prediction.outputs.items():
            tensors.from_ndarray(array, response.outputs[name], as_content=self._as_content)
        return response

    @async_rpc_errors
    async def GetModelMetadata(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        metadata = self._plane.metadata(selector_from_proto(request), request.metadata_field)
        return responses.metadata_response(metadata)

    @async_rpc_errors
    async def Classify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._timed(
            request.model_spec.name, "Classify", lambda: self._classify(request)
        )

    def _classify(self, request: Any) -> Any:
        served, result = self._plane.classify(selector_from_proto(request), request.input)
        return responses.classification_response(served, result)

    @async_rpc_errors
    async def Regress(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._timed(request.model_spec.name, "Regress", lambda: self._regress(request))

    def _regress(self, request: Any) -> Any:
        served, result = self._plane.regress(selector_from_proto(request), request.input)
        return responses.regression_response(served, result)

    @async_rpc_errors
    async def MultiInference(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        model = request.tasks[0].model_spec.name if request.tasks else ""
        return await self._timed(model, "MultiInference", lambda: self._multi_inference(request))

    def _multi_inference(self, request: Any) -> Any:
        tasks = tasks_from_proto(request)
        results = self._plane.multi_inference(tasks, request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task, (served, result) in zip(tasks, results, strict=True):
            entry = response.results.add()
            responses.fill_spec(entry.model_spec, served)
            if task.method_name == CLASSIFY_METHOD:
                responses.fill_classification(entry.classification_result, result)  # type: ignore[arg-type]
            else:
                responses.fill_regression(entry.regression_result, result)  # type: ignore[arg-type]
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """``reload_refusal``: set when the config comes from elsewhere (``--assignments``),
    so a reload RPC would fight it: the RPC then answers FAILED_PRECONDITION."""

    def __init__(self, plane: DataPlane, reload: Reload, reload_refusal: str = "") -> None:
        self._plane = plane
        self._reload = reload
        self._reload_refusal = reload_refusal

    @rpc_errors
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        return responses.status_response(self._plane.status(spec.name, version))

    @rpc_errors
    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self._reload_refusal:
            raise FailedPrecondition(self._reload_refusal)
        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise InvalidArgument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        self._reload(specs_from_proto(config, "ReloadConfigRequest"))
        return model_management_pb2.ReloadConfigResponse()


def add_services(
    server: grpc.aio.Server,
    plane: DataPlane,
    reload: Reload,
    metrics: ServingMetrics,
    run: Run[Any],
    tensor_content: bool,
    reload_refusal: str = "",
) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(plane, metrics, run, tensor_content), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(plane, reload, reload_refusal), server
    )
