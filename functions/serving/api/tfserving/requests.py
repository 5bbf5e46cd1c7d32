"""TF Serving request protos to the data plane's types (gRPC and warmup logs)."""

from __future__ import annotations

from typing import Any

from functions.serving.dataplane.types import ModelSelector, Task
from loader.errors import InvalidArgument


def selector_from_spec(spec: Any) -> ModelSelector:
    choice = spec.WhichOneof("version_choice")
    return ModelSelector(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
        signature_name=spec.signature_name,
    )


def selector_from_proto(request: Any) -> ModelSelector:
    """The model_spec of a Predict/Classify/Regress/GetModelMetadata request."""
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    return selector_from_spec(request.model_spec)


def tasks_from_proto(request: Any) -> list[Task]:
    """The tasks of a MultiInferenceRequest."""
    return [Task(selector_from_spec(t.model_spec), t.method_name) for t in request.tasks]
