"""TF Serving response protos built from data-plane results, for every transport
(gRPC sends them; REST renders status and metadata with the proto3 JSON
mapping, as TF Serving's REST API does)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    regression_pb2,
)

from functions.serving.dataplane.types import (
    SIGNATURE_DEF_FIELD,
    Classification,
    Metadata,
    Regression,
    Served,
    VersionStatus,
)


def fill_spec(spec: Any, served: Served) -> None:
    """A response's model_spec: the version and signature that answered."""
    spec.name = served.version_id.model
    spec.version.value = served.version_id.version
    spec.signature_name = served.signature_name


def metadata_response(metadata: Metadata) -> Any:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = metadata.version_id.model
    response.model_spec.version.value = metadata.version_id.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(metadata.signature_defs)
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


def classification_response(served: Served, classification: Classification) -> Any:
    """Classify's answer: its result and the model_spec that answered."""
    response = classification_pb2.ClassificationResponse()
    fill_classification(response.result, classification)
    fill_spec(response.model_spec, served)
    return response


def regression_response(served: Served, regression: Regression) -> Any:
    """Regress's answer: its result and the model_spec that answered."""
    response = regression_pb2.RegressionResponse()
    fill_regression(response.result, regression)
    fill_spec(response.model_spec, served)
    return response


def fill_classification(result: Any, classification: Classification) -> None:
    """A ClassificationResult: per example, its classes (label and score)."""
    for classes in classification:
        entry = result.classifications.add()
        for cls in classes:
            item = entry.classes.add()
            item.label, item.score = cls.label, cls.score


def fill_regression(result: Any, regression: Regression) -> None:
    for value in regression:
        result.regressions.add().value = value
