"""TF Serving response protos built from data-plane results, for every transport
(gRPC sends them; REST renders them with the proto3 JSON mapping, as TF
Serving's REST API does for status and metadata)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from functions.serving.inference import SIGNATURE_DEF_FIELD
from functions.serving.manager import VersionStatus
from functions.serving.servable import Servable


def metadata_response(servable: Servable, signature_defs: Any) -> Any:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.version_id.model
    response.model_spec.version.value = servable.version_id.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
    return response


def status_response(statuses: Iterable[VersionStatus]) -> Any:
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = int(status.state)
        entry.status.SetInParent()  # TF Serving always sets it: {error_code: OK} when fine
        if status.error is not None:
            entry.status.error_code = int(status.error.code)
            entry.status.error_message = status.error.message
    return response
