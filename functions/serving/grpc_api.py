"""Thin gRPC adapters over the data plane: TF Serving's PredictionService and
ModelService, with the stubs and messages of ``tensorflow-serving-api``."""

from __future__ import annotations

from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from functions.serving import example_inference, inference, metrics, responses, tensors
from functions.serving.core import ServingCore
from functions.serving.grpc_status import rpc_errors
from functions.serving.proto_requests import selector_from_proto, tasks_from_proto
from loader.errors import FailedPrecondition, InvalidArgument
from loader.model_config import specs_from_proto

GRPC = "GRPC"  # the request_latency "entrypoint" label


def _fill_spec(spec: Any, served: example_inference.Served) -> None:
    spec.name = served.version_id.model
    spec.version.value = served.version_id.version
    spec.signature_name = served.signature_name


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(
        self, core: ServingCore, tensor_content: bool = False, check_method: bool = False
    ) -> None:
        self._manager = core.manager
        self._as_content = tensor_content
        self._check_method = check_method

    @rpc_errors
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        with metrics.request(request.model_spec.name, "Predict", GRPC):
            return self._predict(request)

    def _predict(self, request: Any) -> Any:
        result = inference.predict(
            self._manager,
            selector_from_proto(request),
            request.inputs,
            tensors.to_ndarray,
            request.output_filter,
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = result.version_id.model
        response.model_spec.version.value = result.version_id.version
        response.model_spec.signature_name = result.signature_name
        for name, array in result.outputs.items():
            tensors.from_ndarray(array, response.outputs[name], as_content=self._as_content)
        return response

    @rpc_errors
    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        selector = selector_from_proto(request)
        servable, signature_defs = inference.model_metadata(
            self._manager, selector, request.metadata_field
        )
        return responses.metadata_response(servable, signature_defs)

    @rpc_errors
    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        with metrics.request(request.model_spec.name, "Classify", GRPC):
            return self._classify(request)

    def _classify(self, request: Any) -> Any:
        served, result = example_inference.classify(
            self._manager, selector_from_proto(request), request.input, self._check_method
        )
        response = classification_pb2.ClassificationResponse(result=result)
        _fill_spec(response.model_spec, served)
        return response

    @rpc_errors
    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        with metrics.request(request.model_spec.name, "Regress", GRPC):
            return self._regress(request)

    def _regress(self, request: Any) -> Any:
        served, result = example_inference.regress(
            self._manager, selector_from_proto(request), request.input, self._check_method
        )
        response = regression_pb2.RegressionResponse(result=result)
        _fill_spec(response.model_spec, served)
        return response

    @rpc_errors
    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        model = request.tasks[0].model_spec.name if request.tasks else ""
        with metrics.request(model, "MultiInference", GRPC):
            return self._multi_inference(request)

    def _multi_inference(self, request: Any) -> Any:
        results = example_inference.multi_inference(
            self._manager, tasks_from_proto(request), request.input, self._check_method
        )
        response = inference_pb2.MultiInferenceResponse()
        for served, result in results:
            entry = response.results.add()
            _fill_spec(entry.model_spec, served)
            if isinstance(result, classification_pb2.ClassificationResult):
                entry.classification_result.CopyFrom(result)
            else:
                entry.regression_result.CopyFrom(result)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """``reload_refusal``: set when the config comes from elsewhere (``--assignments``),
    so a reload RPC would fight it: the RPC then answers FAILED_PRECONDITION."""

    def __init__(self, core: ServingCore, reload_refusal: str = "") -> None:
        self._core = core
        self._reload_refusal = reload_refusal

    @rpc_errors
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        return responses.status_response(
            inference.model_status(self._core.manager, spec.name, version)
        )

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
        self._core.reload(specs_from_proto(config, "ReloadConfigRequest"))
        return model_management_pb2.ReloadConfigResponse()


def add_services(
    server: grpc.Server,
    core: ServingCore,
    tensor_content: bool,
    check_method: bool,
    reload_refusal: str = "",
) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core, tensor_content, check_method), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(core, reload_refusal), server
    )
